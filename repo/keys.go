package repo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/blockmover/blockmover/repo/backend"
)

// KeyInfo describes one key file.
type KeyInfo struct {
	ID       string    `json:"id"`
	Current  bool      `json:"current"` // the key that opened the repository
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	Username string    `json:"username,omitempty"`
	// Damaged says why the key file cannot be used (its content does not
	// match its name, or it does not parse); such a key can be removed.
	Damaged string `json:"damaged,omitempty"`
}

// AddKey adds a key file that opens the repository with password and
// returns its ID.
func (r *Repository) AddKey(ctx context.Context, password []byte, kdf KDFParams) (string, error) {
	if kdf == (KDFParams{}) {
		kdf = DefaultKDF()
	}
	kf, err := newKeyFile(r.key, password, kdf)
	if err != nil {
		return "", err
	}
	id := fileID(kf).String()
	if err := r.be.Put(ctx, keysPrefix+id, kf); err != nil {
		return "", fmt.Errorf("writing key: %w", err)
	}
	return id, nil
}

// Keys lists the key files.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.be.List(ctx, keysPrefix, func(oi backend.ObjectInfo) error {
		name := strings.TrimPrefix(oi.Key, keysPrefix)
		b, err := backend.ReadAll(ctx, r.be, oi.Key, 0, -1)
		if err != nil {
			return err
		}
		ki := KeyInfo{ID: name, Current: name == r.keyID}
		if err := checkKeyFileName(name, b); err != nil {
			ki.Damaged = ErrKeyFileDamaged.Error()
		} else if kf, err := parseKeyFile(b); err != nil {
			ki.Damaged = err.Error()
		} else {
			ki.Created, ki.Hostname, ki.Username = kf.Created, kf.Hostname, kf.Username
		}
		out = append(out, ki)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return out, nil
}

// RemoveKey deletes the key file whose ID starts with prefix. It refuses to
// remove the key that opened the repository, so a repository always keeps
// a key someone can use.
func (r *Repository) RemoveKey(ctx context.Context, prefix string) (string, error) {
	keys, err := r.Keys(ctx)
	if err != nil {
		return "", err
	}
	var match []KeyInfo
	for _, k := range keys {
		if prefix != "" && strings.HasPrefix(k.ID, prefix) {
			match = append(match, k)
		}
	}
	switch {
	case len(match) == 0:
		return "", fmt.Errorf("no key %q", prefix)
	case len(match) > 1:
		return "", fmt.Errorf("key prefix %q is ambiguous (%d matches)", prefix, len(match))
	case match[0].Current:
		return "", errors.New("refusing to remove the key in use; open the repository with another key to remove this one")
	}
	if err := r.be.Delete(ctx, keysPrefix+match[0].ID); err != nil {
		return "", fmt.Errorf("removing key: %w", err)
	}
	return match[0].ID, nil
}
