// Package kmsplugin is a KMS v2 plugin on the upstream framework (k8s.io/kms/pkg/service): the
// gRPC service kube-apiserver talks to over a unix socket, with a local key-encryption key
// (AES-256-GCM) instead of a cloud KMS. The interop tier uses it so that kube-apiserver's own
// KMS v2 transformer writes and reads values; atrest's KMS client can be pointed at the same
// socket (cmd/kmsplugin serves one standalone).
package kmsplugin

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/kms/pkg/service"
)

// Plugin is the key service behind the gRPC framework: KEKs by key ID, one of them current.
type Plugin struct {
	mu      sync.Mutex
	keks    map[string]cipher.AEAD
	current string
	// Calls counts Encrypt and Decrypt requests (kube caches DEKs: few calls for many values).
	Calls struct{ Encrypt, Decrypt int }
}

var _ service.Service = (*Plugin)(nil)

// New makes a plugin whose current key is keyID with the given 32-byte KEK (random if nil).
func New(keyID string, kek []byte) (*Plugin, error) {
	p := &Plugin{keks: map[string]cipher.AEAD{}}
	return p, p.AddKey(keyID, kek, true)
}

// AddKey adds a KEK (random if nil) and makes it current if asked (a KMS-side rotation).
func (p *Plugin) AddKey(keyID string, kek []byte, current bool) error {
	if kek == nil {
		kek = make([]byte, 32)
		if _, err := rand.Read(kek); err != nil {
			return err
		}
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keks[keyID] = aead
	if current {
		p.current = keyID
	}
	return nil
}

// Encrypt wraps a DEK (or seed) with the current KEK: nonce ‖ AES-GCM(KEK, data, AAD = key ID).
func (p *Plugin) Encrypt(_ context.Context, _ string, data []byte) (*service.EncryptResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Calls.Encrypt++
	aead := p.keks[p.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &service.EncryptResponse{
		Ciphertext: aead.Seal(nonce, nonce, data, []byte(p.current)),
		KeyID:      p.current,
	}, nil
}

// Decrypt unwraps with the KEK the request names.
func (p *Plugin) Decrypt(_ context.Context, _ string, req *service.DecryptRequest) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Calls.Decrypt++
	aead, ok := p.keks[req.KeyID]
	if !ok {
		return nil, fmt.Errorf("unknown key ID %q", req.KeyID)
	}
	if len(req.Ciphertext) < aead.NonceSize() {
		return nil, errors.New("ciphertext shorter than a nonce")
	}
	n := aead.NonceSize()
	return aead.Open(nil, req.Ciphertext[:n], req.Ciphertext[n:], []byte(req.KeyID))
}

// Status reports healthy, API v2 and the current key ID.
func (p *Plugin) Status(context.Context) (*service.StatusResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &service.StatusResponse{Version: "v2", Healthz: "ok", KeyID: p.current}, nil
}

// Serve runs the framework's gRPC service on a unix socket until stop is called.
func Serve(socket string, p *Plugin) (stop func(), err error) {
	s := service.NewGRPCService(socket, 5*time.Second, p)
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe() }()
	// ListenAndServe listens first; wait until the socket answers or the server failed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("KMS plugin on %s: %w", socket, err)
		default:
		}
		if ok := dialable(socket); ok {
			return s.Close, nil
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("KMS plugin on %s did not start within 5 s", socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
