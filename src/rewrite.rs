//! Re-encrypting stored entries. (Skeleton.)
