//! `atrest encrypt` and `atrest decrypt`: raw bytes in, raw bytes out, exactly as stored.

use atrest::provider::{Provider, ProviderKind};
use atrest::transform::State;

use super::load_chain;
use crate::cli::args::CryptArgs;
use crate::cli::output::{read_input, write_output};
use crate::cli::{CliError, Exit};

/// Encrypts standard input (or a file) with the config's write provider and key.
pub(crate) fn encrypt(args: CryptArgs) -> Result<Exit, CliError> {
    let chain = load_chain(
        &args.config,
        &super::resource_prefix(&args.etcd_key)?,
        &args.kms,
    )?;
    if let Provider::Kms(kms) = &chain.write_entry().provider {
        kms.ready_to_write()
            .map_err(|e| CliError::store(e.to_string()).advice(e.advice()))?;
    }
    let input = zeroize::Zeroizing::new(read_input(args.input.as_deref())?);
    let value = chain
        .encrypt(&input, args.etcd_key.as_bytes())
        .map_err(|e| CliError::usage(format!("cannot encrypt: {e}")))?;
    write_output(args.out.as_deref(), &value, args.force)?;
    Ok(Exit::Clean)
}

/// Decrypts a stored value with every key of the config, as kube-apiserver reads it.
pub(crate) fn decrypt(args: CryptArgs) -> Result<Exit, CliError> {
    // Secret data, mostly binary protobuf: never to a terminal by accident (`--out -` asks).
    if args.out.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(
            CliError::usage("refusing to write decrypted secret data to the terminal").advice(
                "pass --out FILE, pipe it into another command, or pass --out - to print it anyway",
            ),
        );
    }
    let chain = load_chain(
        &args.config,
        &super::resource_prefix(&args.etcd_key)?,
        &args.kms,
    )?;
    let input = read_input(args.input.as_deref())?;
    let found = chain.classify(&input, args.etcd_key.as_bytes());
    match (found.state, found.plaintext) {
        (State::Plaintext, Some(_)) if found.readable == Some(false) => Err(CliError::usage(
            "the value is not encrypted and the config has no identity provider: kube-apiserver could not read it",
        )),
        (_, Some(plaintext)) => {
            write_output(args.out.as_deref(), &plaintext, args.force)?;
            Ok(Exit::Clean)
        }
        (state, None) => {
            let what = match state {
                State::UnknownKey => "the value names a key the config does not have",
                State::Kms => "the value is encrypted by a KMS provider",
                _ => "the value does not decrypt with the key it names",
            };
            let mut err = CliError::usage(format!("cannot decrypt: {what} ({state})"));
            if let Some(reason) = found.error {
                err = err.detail(reason);
            }
            Err(err.advice(match state {
                State::UnknownKey => "the config has no key with this value's provider and name; use the config that wrote it",
                State::Kms => "KMS values are decrypted through the KMS plugin: drop --no-kms",
                _ if found.provider == Some(ProviderKind::Aesgcm) => "check --etcd-key (aesgcm binds the value to its full etcd key) and that the config holds the key that wrote the value",
                _ => "the value is damaged, or a different key was written under the same name: check that the config is the one kube-apiserver uses",
            }))
        }
    }
}
