// Package kubecodec is kube-apiserver's own encryption-at-rest code, used as the reference the
// interop tier holds atrest against: a config goes through k8s.io/apiserver's
// encryptionconfig.LoadEncryptionConfig (parse, strict decode, validate, build transformers),
// and values go through the transformers it returns, exactly as kube-apiserver's etcd3 store
// calls them (authenticated data = the full etcd key).
package kubecodec

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
)

// Codec is one loaded EncryptionConfiguration.
type Codec struct {
	transformers encryptionconfig.StaticTransformers
	cancel       context.CancelFunc
	// Hash is kube-apiserver's hash of the file ("sha256:…").
	Hash string
}

// Load reads a config file the way kube-apiserver does at start-up
// (--encryption-provider-config, no automatic reload).
func Load(path string) (*Codec, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, path, false, "atrest-interop")
	if err != nil {
		cancel()
		return nil, err
	}
	return &Codec{transformers: cfg.Transformers, cancel: cancel, Hash: cfg.EncryptionFileContentHash}, nil
}

// Close stops what the loader started (KMS plugin probes).
func (c *Codec) Close() { c.cancel() }

// ParseGroupResource reads "secrets", "widgets.example.com" or "*." as the config does.
func ParseGroupResource(s string) schema.GroupResource {
	return schema.ParseGroupResource(s)
}

// ResourceOfKey is the group/resource of a core-group etcd key /<root>/<resource>/…
// (the keys atrest's encrypt/decrypt derive their resource from).
func ResourceOfKey(etcdKey string) (schema.GroupResource, error) {
	parts := strings.SplitN(strings.TrimPrefix(etcdKey, "/"), "/", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" {
		return schema.GroupResource{}, fmt.Errorf("etcd key %q is not /<root>/<resource>/<name>", etcdKey)
	}
	return schema.GroupResource{Resource: parts[1]}, nil
}

func (c *Codec) transformer(gr schema.GroupResource) value.Transformer {
	return c.transformers.TransformerForResource(gr)
}

// Decrypt is TransformFromStorage: the plaintext and whether kube-apiserver would call the
// value stale (to be rewritten with the current write key).
func (c *Codec) Decrypt(gr schema.GroupResource, etcdKey string, stored []byte) (plain []byte, stale bool, err error) {
	return c.transformer(gr).TransformFromStorage(context.Background(), stored, value.DefaultContext(etcdKey))
}

// Encrypt is TransformToStorage: what kube-apiserver would store for this plaintext.
func (c *Codec) Encrypt(gr schema.GroupResource, etcdKey string, plain []byte) ([]byte, error) {
	return c.transformer(gr).TransformToStorage(context.Background(), plain, value.DefaultContext(etcdKey))
}
