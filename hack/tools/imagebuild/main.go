// Command imagebuild writes the mover's container image as a tarball that
// `docker load`, `podman load`, `kind load image-archive` and
// `ctr images import` accept, without a container engine. The image is one
// layer on nothing: the static mover binary, CA certificates for S3 over
// TLS, /etc/passwd and /etc/group with root and nonroot (65532), and /tmp.
// File times and the creation time are zero, so the same binary always
// gives the same image digest. With -name and -title it packs another
// static binary the same way (the test cluster's pause image).
//
// Usage: imagebuild -binary PATH -out FILE.tar [-tag REF] [-ca PEM] [-arch amd64] [-name mover] [-title TITLE]
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	binary := flag.String("binary", "", "static mover binary (required)")
	out := flag.String("out", "", "image tarball to write (required)")
	tag := flag.String("tag", "blockmover/mover:dev", "image reference recorded in the tarball")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to include (empty: none)")
	arch := flag.String("arch", "amd64", "image architecture")
	version := flag.String("version", "dev", "org.opencontainers.image.version label")
	bname := flag.String("name", "mover", "the binary's name in the image's root, its entrypoint")
	title := flag.String("title", "blockmover mover", "org.opencontainers.image.title label")
	flag.Parse()
	if *binary == "" || *out == "" || *bname == "" || strings.Contains(*bname, "/") {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(*binary, *out, *tag, *ca, *arch, *version, *bname, *title); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func build(binary, out, tag, ca, arch, version, bname, title string) error {
	ref, err := name.ParseReference(tag)
	if err != nil {
		return err
	}
	layer, err := rootfs(binary, ca, bname)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = arch, "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{"/" + bname}
	cf.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.WorkingDir = "/"
	cf.Config.User = "0:0"
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":   title,
		"org.opencontainers.image.source":  "https://github.com/blockmover/blockmover",
		"org.opencontainers.image.version": version,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// rootfs returns the layer as an uncompressed tar.
func rootfs(binary, ca, bname string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	zero := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: zero, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: zero, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp/", 0o1777); err != nil {
		return nil, err
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n")); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")); err != nil {
		return nil, err
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		if err := file("etc/ssl/certs/ca-certificates.crt", 0o644, pem); err != nil {
			return nil, err
		}
	}
	if err := file(bname, 0o755, bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
