//! Any config text: no panic; a config that validates builds a pipeline.
#![no_main]

use downbeat::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(config) = toml::from_str::<Config>(text) else {
        return;
    };
    if config.validate().is_ok() {
        let pipeline = config
            .pipeline()
            .expect("a validated config builds its pipeline settings");
        let metrics = downbeat::metrics::Metrics::new();
        downbeat::pipeline::Pipeline::new(pipeline, &metrics, None, 1_700_000_000_000)
            .expect("a validated config builds its pipeline");
    }
});
