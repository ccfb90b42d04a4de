#!/usr/bin/env python3
"""Generates atrest's provider test vectors with independent implementations.

Every vector is computed here with Python `cryptography` (AES-CBC, AES-GCM) and PyNaCl
(libsodium's XSalsa20-Poly1305), never with atrest itself, following kube-apiserver's stored
format (`k8s:enc:<provider>:v1:<key name>:` + provider body). One JSON file per vector:

    {"description", "provider", "key_name", "key", "etcd_key", "nonce", "plaintext", "value",
     "result": "ok" | "error", "error": "<DecryptError variant>"}

`nonce` is the IV (aescbc) or nonce (aesgcm, secretbox) the value was made with; all byte
strings are hex. Re-run with `pip install cryptography pynacl && python3 generate.py`; the
output is deterministic.
"""
import json
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
import nacl.secret

HERE = os.path.dirname(os.path.abspath(__file__))


def ld(f, p):
    return varint(f << 3 | 2) + varint(len(p)) + p


def vi(f, n):
    return varint(f << 3) + varint(n)


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# The 125-byte stored Secret of notes/k8s-format.md §5.1.
meta = (ld(1, b"secret1") + ld(2, b"") + ld(3, b"default") + ld(4, b"")
        + ld(5, b"0b5c2a6e-7a39-4f8e-9d3c-1c2b3a4d5e6f") + ld(6, b"") + vi(7, 0)
        + ld(8, vi(1, 1700000000) + vi(2, 0)))
secret = ld(1, meta) + ld(2, ld(1, b"mykey") + ld(2, b"mydata")) + ld(3, b"Opaque")
SECRET = b"k8s\x00" + ld(1, ld(1, b"v1") + ld(2, b"Secret")) + ld(2, secret) + ld(3, b"") + ld(4, b"")
assert len(SECRET) == 125

ETCD_KEY = b"/registry/secrets/default/secret1"


def seq(start, n):
    return bytes((start + i) & 0xFF for i in range(n))


def cbc_raw(key, iv, padded):
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(padded) + e.finalize()


def pkcs7(pt):
    n = 16 - len(pt) % 16
    return pt + bytes([n]) * n


def prefix(provider, name):
    return b"k8s:enc:" + provider.encode() + b":v1:" + name.encode() + b":"


def write(name, description, provider, key_name, key, nonce, plaintext, value,
          etcd_key=ETCD_KEY, error=None):
    doc = {
        "description": description,
        "provider": provider,
        "key_name": key_name,
        "key": key.hex(),
        "etcd_key": etcd_key.decode(),
        "nonce": nonce.hex(),
        "plaintext": plaintext.hex(),
        "value": value.hex(),
        "result": "error" if error else "ok",
    }
    if error:
        doc["error"] = error
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main():
    iv = seq(0xA0, 16)
    for bits, klen in ((128, 16), (192, 24), (256, 32)):
        key = seq(0, klen)
        for label, pt in (("empty", b""), ("15", seq(0x30, 15)), ("16", seq(0x30, 16)),
                          ("secret", SECRET)):
            v = prefix("aescbc", "key1") + iv + cbc_raw(key, iv, pkcs7(pt))
            write(f"aescbc-{bits}-{label}", f"AES-{bits}-CBC, plaintext {label}",
                  "aescbc", "key1", key, iv, pt, v)
    key = seq(0, 32)
    name = "aescbckey-2025-05-16T19:21:39Z"
    v = prefix("aescbc", name) + iv + cbc_raw(key, iv, pkcs7(SECRET))
    write("aescbc-key-name-with-colons", "k3s-style key name containing ':'",
          "aescbc", name, key, iv, SECRET, v)
    bad = cbc_raw(key, iv, SECRET[:16] + bytes([0x11]) * 16)
    write("aescbc-bad-padding", "last block ends in 0x11: invalid PKCS#7 padding",
          "aescbc", "key1", key, iv, b"", prefix("aescbc", "key1") + iv + bad, error="Padding")
    write("aescbc-truncated-iv", "only 10 IV bytes", "aescbc", "key1", key, iv, b"",
          prefix("aescbc", "key1") + iv[:10], error="Truncated")
    write("aescbc-not-block-aligned", "ciphertext one byte short of a block",
          "aescbc", "key1", key, iv, b"",
          prefix("aescbc", "key1") + iv + cbc_raw(key, iv, pkcs7(b"x"))[:15], error="BlockSize")
    write("aescbc-prefix-only", "the prefix and nothing else", "aescbc", "key1", key, iv, b"",
          prefix("aescbc", "key1"), error="Truncated")

    nonce = seq(0xB0, 12)
    for bits, klen in ((128, 16), (192, 24), (256, 32)):
        key = seq(0, klen)
        for label, pt in (("empty", b""), ("secret", SECRET)):
            v = prefix("aesgcm", "key1") + nonce + AESGCM(key).encrypt(nonce, pt, ETCD_KEY)
            write(f"aesgcm-{bits}-{label}", f"AES-{bits}-GCM, AAD = etcd key, plaintext {label}",
                  "aesgcm", "key1", key, nonce, pt, v)
    key = seq(0, 32)
    v = prefix("aesgcm", "key1") + nonce + AESGCM(key).encrypt(
        nonce, SECRET, b"/registry/secrets/default/secret2")
    write("aesgcm-moved-value", "encrypted for another etcd key: authentication fails",
          "aesgcm", "key1", key, nonce, b"", v, error="Authentication")
    good = bytearray(prefix("aesgcm", "key1") + nonce + AESGCM(key).encrypt(nonce, SECRET, ETCD_KEY))
    good[-1] ^= 0x01
    write("aesgcm-flipped-tag", "last tag byte flipped", "aesgcm", "key1", key, nonce, b"",
          bytes(good), error="Authentication")
    write("aesgcm-short-tag", "nonce and 8 bytes: shorter than a tag", "aesgcm", "key1", key,
          nonce, b"", prefix("aesgcm", "key1") + nonce + bytes(8), error="Truncated")
    legacy = bytes.fromhex("9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797d"
                           "ac0a3f0a0845605ca85ac8562b4ae1")
    assert AESGCM(b"snorlax_awesomes").decrypt(legacy[:12], legacy[12:], b"bamboo") == b"pandas are the best"
    write("aesgcm-kube-apiserver-legacy",
          "kube-apiserver aes_test.go TestGCMLegacyDataCompatibility (AAD 'bamboo')",
          "aesgcm", "key1", b"snorlax_awesomes", legacy[:12], b"pandas are the best",
          prefix("aesgcm", "key1") + legacy, etcd_key=b"bamboo")

    snonce = seq(0xC0, 24)
    key = seq(0, 32)
    box = nacl.secret.SecretBox(key)
    for label, pt in (("empty", b""), ("secret", SECRET)):
        enc = box.encrypt(pt, snonce)  # nonce || tag || ciphertext
        write(f"secretbox-{label}", f"XSalsa20-Poly1305 (libsodium), plaintext {label}",
              "secretbox", "key1", key, snonce, pt, prefix("secretbox", "key1") + bytes(enc))
    enc = bytearray(box.encrypt(SECRET, snonce))
    enc[24] ^= 0x80
    write("secretbox-flipped-tag", "first tag byte flipped", "secretbox", "key1", key, snonce,
          b"", prefix("secretbox", "key1") + bytes(enc), error="Authentication")
    write("secretbox-truncated-nonce", "20 nonce bytes", "secretbox", "key1", key, snonce, b"",
          prefix("secretbox", "key1") + snonce[:20], error="Truncated")


if __name__ == "__main__":
    main()
