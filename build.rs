//! Compiles the KMS plugin gRPC API (`proto/kms/`, from k8s.io/kms) into client and server code.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["proto/kms/v2/api.proto", "proto/kms/v1beta1/api.proto"],
            &["proto"],
        )
        .expect("compiling proto/kms/*.proto (is protoc installed?)");
}
