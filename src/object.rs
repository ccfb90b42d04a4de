//! Decoding what a plaintext stored value holds. (Skeleton: owned by a helper.)
