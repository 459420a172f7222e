package velero

import (
	"context"
	"fmt"
	"slices"
	"strings"

	velerov1 "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	velerov2 "github.com/vmware-tanzu/velero/pkg/apis/velero/v2alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
)

// The Velero resources the controller reads and writes, through the
// dynamic client: Velero's generated clientset would pull in its
// controller-runtime dependencies for three resources.
func uploadsGVR() schema.GroupVersionResource {
	return velerov2.SchemeGroupVersion.WithResource("datauploads")
}
func downloadsGVR() schema.GroupVersionResource {
	return velerov2.SchemeGroupVersion.WithResource("datadownloads")
}
func bslGVR() schema.GroupVersionResource {
	return velerov1.SchemeGroupVersion.WithResource("backupstoragelocations")
}

// Labels Velero's CSI PVC action puts on a DataUpload.
const (
	LabelBackupName = velerov1.BackupNameLabel
	LabelBackupUID  = velerov1.BackupUIDLabel
	LabelPVCUID     = velerov1.PVCUIDLabel
)

func fromUnstructured[T any](u *unstructured.Unstructured) (*T, error) {
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("decoding %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}

func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// getObject gets one Velero object and decodes it into T.
func getObject[T any](ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name string) (*T, error) {
	u, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return fromUnstructured[T](u)
}

// updateObject applies mutate to the newest copy of an object and writes
// it back, again on a conflict. Velero's v2alpha1 CRDs have no status
// subresource, so status is written with the object, as Velero's own
// controllers do. mutate returns false to write nothing.
func updateObject[T any, P interface {
	*T
	metav1.Object
}](ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name string, mutate func(P) bool) (P, error) {
	var out P
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		obj, err := getObject[T](ctx, dyn, gvr, ns, name)
		if err != nil {
			return err
		}
		p := P(obj)
		if !mutate(p) {
			out = p
			return nil
		}
		u, err := toUnstructured(p)
		if err != nil {
			return err
		}
		got, err := dyn.Resource(gvr).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		if obj, err = fromUnstructured[T](got); err != nil {
			return err
		}
		out = P(obj)
		return nil
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("updating %s %s/%s: %w", gvr.Resource, ns, name, err)
	}
	return out, err
}

func metav1ObjectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}

// sortUnstructured orders objects by creation time, then name.
func sortUnstructured(objs []*unstructured.Unstructured) {
	slices.SortFunc(objs, func(a, b *unstructured.Unstructured) int {
		if c := a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time); c != 0 {
			return c
		}
		return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
	})
}

func corev1ObjectReference(ns, name string, uid types.UID) corev1.ObjectReference {
	return corev1.ObjectReference{Namespace: ns, Name: name, UID: uid}
}
