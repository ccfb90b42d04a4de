package main

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// readSnapshot reads the newest value of every key under prefix from an etcd snapshot file
// (bbolt): bucket "key" maps revisions (8-byte main, '_', 8-byte sub, 't' for a deletion) to
// mvccpb.KeyValue messages (key = field 1, value = field 5).
func readSnapshot(path, prefix string) (map[string][]byte, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return errors.New("no bucket \"key\"")
		}
		return b.ForEach(func(rev, kv []byte) error {
			key, value, err := keyValue(kv)
			if err != nil {
				return fmt.Errorf("revision %x: %w", rev, err)
			}
			if !bytes.HasPrefix(key, []byte(prefix)) {
				return nil
			}
			// key and value point into bbolt's mmap, gone after Close: copy.
			if len(rev) == 18 && rev[17] == 't' {
				delete(out, string(key))
			} else {
				out[string(key)] = bytes.Clone(value)
			}
			return nil
		})
	})
	return out, err
}

func keyValue(b []byte) (key, value []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, protowire.ParseError(n)
			}
			switch num {
			case 1:
				key = v
			case 5:
				value = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return key, value, nil
}
