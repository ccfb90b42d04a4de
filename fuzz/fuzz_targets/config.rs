//! Arbitrary text → `Config::from_yaml`: never panics; a config that passes validation builds a
//! chain for every resource without a key error (validation already checked every key).
#![no_main]

use atrest::config::Config;
use atrest::transform::{Chain, TransformError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(config) = Config::from_yaml(text) else {
        return;
    };
    for (group, resource) in [("", "secrets"), ("", "configmaps"), ("apps", "deployments")] {
        match Chain::from_config(&config, group, resource) {
            Ok(chain) => assert!(!chain.entries().is_empty()),
            Err(TransformError::NotCovered(_)) => {}
            Err(e) => panic!("a validated config built no chain for {resource}: {e}"),
        }
    }
});
