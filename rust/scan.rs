//! Scanning an adapter: a single file, a folder, or a sharded folder with an index. The pipeline
//! only: files -> headers -> modules -> rules -> the [`Scan`].
//!
//! Files are read in parallel (one task per shard), then the tensors are grouped into modules,
//! checked against each other and against `adapter_config.json`, and summarised. Nothing here
//! creates a Python object; the binding decides what to hand over.
//!
//! May use: everything below it (`read`, `naming`, `config`, `infer`, `rules`, `problem`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{parse_config, AdapterConfig, PeftRanks, Schema};
use crate::error::Result;
use crate::infer::{infer, InferOptions, Inference, Module, TensorView};
use crate::naming::natural::natural_cmp;
use crate::problem::{Code, Problem, Severity};
use crate::read::header::Header;
use crate::read::open::{check_inside, read_small_file, SmallFile, SymlinkPolicy};
use crate::read::plan::{read_plans, Read, ReadPlan};
use crate::read::resolve::{resolve, Sources};
pub use crate::read::resolve::{ConfigSource, ScanOptions};
use crate::read::table::Tensors;
use crate::rules::index::check_index;
use crate::rules::judge;
pub use crate::rules::Format;

#[derive(Debug, Clone)]
pub struct FileSummary {
    /// Its path.
    pub path: PathBuf,
    /// Header length N.
    pub header_bytes: u64,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Bytes of tensor data.
    pub data_bytes: u64,
    /// `__metadata__`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// What the file was when it was read (checked again by the data pass).
    pub identity: crate::read::open::Identity,
}

/// Everything known about an adapter after a scan.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The path that was scanned.
    pub path: PathBuf,
    /// The shard index, when there is one.
    pub index_path: Option<PathBuf>,
    /// The files read, in order.
    pub files: Vec<FileSummary>,
    /// All tensors of all files, in file order.
    pub tensors: Tensors,
    /// The adapter config.
    pub config: Option<AdapterConfig>,
    /// Naming convention.
    pub format: Format,
    /// `lora`, `dora`, `full`, or unknown.
    pub fine_tune_type: Option<&'static str>,
    /// Inferred modules, in natural path order.
    pub modules: Vec<Module>,
    /// Indices into `tensors` of tensors that are not adapter parameters.
    pub non_adapter: Vec<usize>,
    /// Findings.
    pub problems: Vec<Problem>,
}

impl Scan {
    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.data_bytes).sum()
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Scan the adapter at `path` (a safetensors file, a folder, or a shard index).
pub fn scan(path: &Path, opts: &ScanOptions) -> Result<Scan> {
    let pending = Pending::new(path, opts)?;
    let done = read_plans(&[pending.plan()]).pop().unwrap_or_default();
    pending.finish(done)
}

/// A scan resolved to its files, waiting for their first reads (so that a check can read an
/// adapter's and a base's files in one parallel step).
pub(crate) struct Pending<'o> {
    path: PathBuf,
    sources: Sources,
    opts: &'o ScanOptions,
}

impl<'o> Pending<'o> {
    pub(crate) fn new(path: &Path, opts: &'o ScanOptions) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            sources: resolve(path, opts)?,
            opts,
        })
    }

    pub(crate) fn plan(&self) -> ReadPlan<'_> {
        self.sources.plan(self.opts)
    }

    /// The scan, from the reads of [`Pending::plan`].
    pub(crate) fn finish(self, done: Vec<Read>) -> Result<Scan> {
        let Self {
            path,
            mut sources,
            opts,
        } = self;
        let headers = sources.take_reads(done, opts)?;
        finish_scan(&path, sources, headers, opts)
    }
}

fn finish_scan(
    path: &Path,
    mut sources: Sources,
    headers: Vec<Header>,
    opts: &ScanOptions,
) -> Result<Scan> {
    let config = read_config(&sources, opts)?;
    let mut problems = Vec::new();
    // The index is done with once checked: its text is freed before modules are inferred.
    let index_path = match sources.index.take() {
        Some((index_path, index)) => {
            check_index(&index_path, &index, &headers, &mut problems)?;
            Some(index_path)
        }
        None => None,
    };
    if !sources.model_files.is_empty() {
        let names: Vec<String> = sources
            .model_files
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            })
            .collect();
        problems.push(Problem::new(
            Code::ModelInAdapterFolder,
            Severity::Warning,
            None,
            format!(
                "a model checkpoint is in the adapter folder ({}): the adapter's own files were \
                 read, the model's were not (mlx-lm-lora writes its fused model there by default)",
                names.join(", ")
            ),
        ));
    }
    for other in &sources.others {
        problems.push(Problem::new(
            Code::UnreferencedShard,
            Severity::Warning,
            None,
            format!(
                "{} is in the folder but the shard index does not reference it",
                other.display()
            ),
        ));
    }

    let (files, tensors) = summarize(headers);

    let mut views: Vec<TensorView<'_>> = Vec::with_capacity(tensors.len());
    views.extend(tensors.iter().map(|t| TensorView {
        name: t.name,
        dtype: t.dtype,
        shape: &t.info.shape,
    }));
    let inference = infer_modules(&views, config.as_ref())?;
    problems.extend(inference.problems);
    let non_adapter_names: Vec<&str> = inference
        .non_adapter
        .iter()
        .map(|&i| views[i].name)
        .collect();
    let saved: Vec<(&Path, Option<&BTreeMap<String, String>>)> = files
        .iter()
        .map(|f: &FileSummary| (f.path.as_path(), f.metadata.as_ref()))
        .collect();
    crate::rules::save_id::check_save_ids(config.as_ref(), &saved, &mut problems);
    drop(saved);
    let verdict = judge(
        config.as_ref(),
        opts.config != ConfigSource::Skip,
        &inference.modules,
        &non_adapter_names,
        &inference.families,
        &mut problems,
    )?;
    problems.sort_by(|a, b| {
        a.severity.cmp(&b.severity).then_with(|| {
            natural_cmp(
                a.path.as_deref().unwrap_or(""),
                b.path.as_deref().unwrap_or(""),
            )
        })
    });
    drop(views);
    Ok(Scan {
        path: path.to_path_buf(),
        index_path,
        files,
        tensors,
        config,
        format: verdict.0,
        fine_tune_type: verdict.1,
        modules: inference.modules,
        non_adapter: inference.non_adapter,
        problems,
    })
}

/// The adapter config, when there is one to read (inside the folder, under the symlink policy).
fn read_config(sources: &Sources, opts: &ScanOptions) -> Result<Option<AdapterConfig>> {
    let Some(p) = &sources.config else {
        return Ok(None);
    };
    if opts.limits.symlinks == SymlinkPolicy::Inside {
        check_inside(&sources.folder, p)?;
    }
    let bytes = read_small_file(p, &opts.limits, SmallFile::AdapterConfig)?;
    parse_config(p, &bytes).map(Some)
}

/// Each file's summary, and all files' tensors as one list.
fn summarize(headers: Vec<Header>) -> (Vec<FileSummary>, Tensors) {
    let mut files = Vec::with_capacity(headers.len());
    let mut lists = Vec::with_capacity(headers.len());
    for h in headers {
        files.push(FileSummary {
            path: h.path.clone(),
            header_bytes: h.header_len,
            tensor_count: h.tensors.len(),
            data_bytes: h.data_bytes(),
            metadata: h.metadata.clone(),
            identity: h.identity,
        });
        lists.push((h.names, h.tensors));
    }
    (files, Tensors::new(lists))
}

/// The modules of the tensors, PEFT `target_parameters` wrappers resolved with the config's ranks.
fn infer_modules(views: &[TensorView<'_>], config: Option<&AdapterConfig>) -> Result<Inference> {
    let mut inference = infer(
        views,
        InferOptions {
            peft_target_parameters: config.is_some_and(|c| !c.target_parameters.is_empty()),
        },
    );
    if let Some(c) = config.filter(|c| c.schema == Schema::Peft && !c.target_parameters.is_empty())
    {
        let ranks = PeftRanks::new(c)?;
        let rank_for = |path: &str| ranks.rank(path);
        crate::infer::param_wrapper::resolve(
            &mut inference.modules,
            views,
            &c.target_parameters,
            &rank_for,
            &mut inference.problems,
        );
    }
    Ok(inference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::files::CONFIG_NAME;
    use crate::read::header::tests::tensors_file;

    fn write_st(dir: &Path, name: &str, tensors: &[(&str, &str, &[u64])]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, tensors_file(tensors)).unwrap();
        p
    }

    fn codes(s: &Scan) -> Vec<&'static str> {
        s.problems.iter().map(|p| p.code.name()).collect()
    }

    const PAIR: &[(&str, &str, &[u64])] = &[
        ("model.layers.0.self_attn.q_proj.lora_a", "F32", &[16, 4]),
        ("model.layers.0.self_attn.q_proj.lora_b", "F32", &[4, 16]),
        ("model.layers.1.self_attn.q_proj.lora_a", "F32", &[16, 4]),
        ("model.layers.1.self_attn.q_proj.lora_b", "F32", &[4, 16]),
    ];

    #[test]
    fn clean_mlx_folder() {
        let dir = tempfile::tempdir().unwrap();
        write_st(dir.path(), "adapters.safetensors", PAIR);
        std::fs::write(dir.path().join(CONFIG_NAME), r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"scale":20.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#).unwrap();
        let s = scan(dir.path(), &ScanOptions::default()).unwrap();
        assert_eq!(codes(&s), Vec::<&str>::new());
        assert_eq!(s.format, Format::Mlx);
        assert_eq!(s.fine_tune_type, Some("lora"));
        assert_eq!(s.modules.len(), 2);
        let groups = s.module_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].template, "model.layers.*.self_attn.q_proj");
        assert_eq!(groups[0].layers, vec![0, 1]);
        let json: serde_json::Value = serde_json::from_str(&s.to_json(false)).unwrap();
        assert_eq!(json["modules"][0]["rank"], 4);
        assert_eq!(json["config"]["num_layers"], 2);
    }

    #[test]
    fn config_cross_checks() {
        let dir = tempfile::tempdir().unwrap();
        write_st(dir.path(), "adapters.safetensors", PAIR);
        let cfg = dir.path().join(CONFIG_NAME);
        let run = |text: &str| {
            std::fs::write(&cfg, text).unwrap();
            let s = scan(dir.path(), &ScanOptions::default()).unwrap();
            codes(&s)
        };
        assert_eq!(
            run(
                r#"{"fine_tune_type":"dora","num_layers":2,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["dora_magnitude_missing", "dora_magnitude_missing"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":8,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["config_rank_mismatch", "config_rank_mismatch"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"alpha":16,"dropout":0.0,"keys":["self_attn.q_proj"]}}"#
            ),
            vec!["config_alpha_instead_of_scale"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":1,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":["self_attn.q_proj","auto"]}}"#
            ),
            vec!["config_num_layers_mismatch", "config_key_unsaved"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"lora","num_layers":2,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0,"keys":[]}}"#
            ),
            vec!["config_keys_empty"]
        );
        assert_eq!(
            run(r#"{"fine_tune_type":"full","num_layers":2}"#),
            vec!["fine_tune_type_mismatch"]
        );
        assert_eq!(
            run(
                r#"{"fine_tune_type":"qlora","num_layers":2,"rank":16,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0}}"#
            ),
            vec![
                "config_rank_conflict",
                "fine_tune_type_unknown",
                "config_keys_missing"
            ]
        );
        assert_eq!(
            run(
                r#"{"lora_layers":2,"use_dora":false,"lora_parameters":{"rank":4,"scale":1.0,"dropout":0.0}}"#
            ),
            vec!["legacy_config", "config_keys_missing"]
        );
        std::fs::write(&cfg, r#"{"num_layers":"x"}"#).unwrap();
        assert_eq!(
            scan(dir.path(), &ScanOptions::default())
                .unwrap_err()
                .code(),
            "invalid_config"
        );
    }

    #[test]
    fn sharded_folder_and_index_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_st(
            d,
            "adapter_model-00001-of-00002.safetensors",
            &[("base_model.model.x.lora_A.weight", "F32", &[4, 8])],
        );
        write_st(
            d,
            "adapter_model-00002-of-00002.safetensors",
            &[("base_model.model.x.lora_B.weight", "F32", &[8, 4])],
        );
        let index = d.join("adapter_model.safetensors.index.json");
        std::fs::write(&index, r#"{"metadata":{"total_size":256},"weight_map":{"base_model.model.x.lora_A.weight":"adapter_model-00001-of-00002.safetensors","base_model.model.x.lora_B.weight":"adapter_model-00002-of-00002.safetensors"}}"#).unwrap();
        let opts = ScanOptions {
            config: ConfigSource::Skip,
            ..ScanOptions::default()
        };
        let s = scan(d, &opts).unwrap();
        assert_eq!(s.files.len(), 2);
        assert_eq!(s.format, Format::Peft);
        assert_eq!(s.modules[0].rank, Some(4));
        assert!(codes(&s).is_empty(), "{:?}", s.problems);
        // Wrong shard, missing key, escape.
        std::fs::write(&index, r#"{"weight_map":{"base_model.model.x.lora_A.weight":"adapter_model-00002-of-00002.safetensors","base_model.model.x.lora_B.weight":"adapter_model-00002-of-00002.safetensors","ghost":"adapter_model-00002-of-00002.safetensors"}}"#).unwrap();
        let err = scan(d, &opts).unwrap_err();
        assert_eq!(err.code(), "shard_mismatch");
        assert_eq!(err.details().len(), 2, "{:?}", err.details());
        std::fs::write(&index, r#"{"weight_map":{"a":"../x.safetensors"}}"#).unwrap();
        assert_eq!(scan(d, &opts).unwrap_err().code(), "path_escape");
    }

    #[test]
    fn folder_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            scan(d, &ScanOptions::default()).unwrap_err().code(),
            "no_adapter"
        );
        write_st(d, "one.safetensors", PAIR);
        write_st(d, "two.safetensors", PAIR);
        assert_eq!(
            scan(d, &ScanOptions::default()).unwrap_err().code(),
            "no_adapter"
        );
        write_st(d, "adapters.safetensors", PAIR);
        write_st(d, "0000100_adapters.safetensors", PAIR);
        write_st(d, ".adapters.tmp.safetensors", PAIR);
        let s = scan(d, &ScanOptions::default()).unwrap();
        assert!(s.files[0].path.ends_with("adapters.safetensors"));
        assert!(codes(&s).contains(&"config_missing"));
    }

    #[test]
    fn a_model_checkpoint_beside_the_adapter_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A fused model as mlx-lm's save_model writes it: weights and an index naming them.
        write_st(
            d,
            "model.safetensors",
            &[("model.layers.0.q.weight", "F32", &[16, 16])],
        );
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"metadata":{"total_size":1024},"weight_map":{"model.layers.0.q.weight":"model.safetensors"}}"#,
        )
        .unwrap();
        // Alone, the model is what the folder holds (a base folder scans as before).
        let s = scan(d, &ScanOptions::default()).unwrap();
        assert!(s.index_path.is_some() && s.modules.is_empty());
        assert!(!codes(&s).contains(&"model_in_adapter_folder"));
        // With the adapter's own weights beside it, the adapter is read and the model reported.
        write_st(d, "adapters.safetensors", PAIR);
        let s = scan(d, &ScanOptions::default()).unwrap();
        assert_eq!(s.files.len(), 1);
        assert!(s.files[0].path.ends_with("adapters.safetensors"));
        assert!(s.index_path.is_none());
        assert_eq!(s.modules.len(), 2);
        let c = codes(&s);
        assert!(c.contains(&"model_in_adapter_folder"), "{c:?}");
        assert!(!c.contains(&"unreferenced_shard") && !c.contains(&"non_adapter_tensor"));
        let p = s
            .problems
            .iter()
            .find(|p| p.code == Code::ModelInAdapterFolder)
            .unwrap();
        assert!(p
            .message
            .contains("model.safetensors, model.safetensors.index.json"));
    }

    #[cfg(unix)]
    #[test]
    fn an_index_linked_out_of_the_folder_is_refused_inside() {
        let dir = tempfile::tempdir().unwrap();
        let (outside, folder) = (dir.path().join("outside"), dir.path().join("a"));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&folder).unwrap();
        write_st(&folder, "adapters.safetensors", PAIR);
        let index = outside.join("adapters.safetensors.index.json");
        let map: Vec<String> = PAIR
            .iter()
            .map(|(n, _, _)| format!("\"{n}\":\"adapters.safetensors\""))
            .collect();
        std::fs::write(&index, format!("{{\"weight_map\":{{{}}}}}", map.join(","))).unwrap();
        std::os::unix::fs::symlink(&index, folder.join("adapters.safetensors.index.json")).unwrap();
        // Followed by default (the Hugging Face cache links every file)...
        assert!(scan(&folder, &ScanOptions::default()).is_ok());
        // ...refused when links must stay inside the folder.
        let inside = ScanOptions {
            limits: crate::read::open::Limits {
                symlinks: SymlinkPolicy::Inside,
                ..crate::read::open::Limits::default()
            },
            ..ScanOptions::default()
        };
        assert_eq!(scan(&folder, &inside).unwrap_err().code(), "path_escape");
    }
}
