//! One save, one id: adapterscan writes a save id into both the config (`adapterscan.save_id`)
//! and every weights file's metadata (`adapterscan_save_id`). Files read while another process
//! replaced the folder can come from two saves (a config of one, weights of the other): the ids
//! then differ, and the pair is torn.
//!
//! May use: `config`, `problem`, `rules` (the context).

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::AdapterConfig;
use crate::problem::Code;
use crate::rules::Ctx;

/// The metadata key of the save id in a weights file.
pub const METADATA_KEY: &str = "adapterscan_save_id";

/// The config's save id against each file's.
pub(crate) fn check_save_ids(
    config: Option<&AdapterConfig>,
    files: &[(&Path, Option<&BTreeMap<String, String>>)],
    problems: &mut Vec<crate::problem::Problem>,
) {
    let cx = &mut Ctx { problems };
    let config_id = config
        .and_then(|c| c.raw.get("adapterscan"))
        .and_then(|a| a.get("save_id"))
        .and_then(serde_json::Value::as_str);
    let ids: Vec<(&Path, &str)> = files
        .iter()
        .filter_map(|(p, m)| {
            m.and_then(|m| m.get(METADATA_KEY))
                .map(|id| (*p, id.as_str()))
        })
        .collect();
    let reference = config_id.or_else(|| ids.first().map(|(_, id)| *id));
    let Some(reference) = reference else { return };
    if let Some((path, id)) = ids.iter().find(|(_, id)| *id != reference) {
        let against = if config_id.is_some() {
            "the config's"
        } else {
            "the first file's"
        };
        cx.error(
            Code::TornSave,
            None,
            format!(
                "{} holds save {id} but {against} is {reference}: the files come from two \
                 saves (read while the folder was being replaced?)",
                path.display()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Problem;

    fn run(config_id: Option<&str>, file_ids: &[Option<&str>]) -> Vec<Problem> {
        let config = config_id.map(|id| {
            let text = format!(r#"{{"fine_tune_type":"lora","adapterscan":{{"save_id":"{id}"}}}}"#);
            crate::config::parse_config(std::path::Path::new("c.json"), text.as_bytes()).unwrap()
        });
        let metas: Vec<Option<BTreeMap<String, String>>> = file_ids
            .iter()
            .map(|id| id.map(|id| BTreeMap::from([(METADATA_KEY.to_string(), id.to_string())])))
            .collect();
        let names: Vec<std::path::PathBuf> =
            (0..metas.len()).map(|i| format!("f{i}").into()).collect();
        let files: Vec<(&Path, Option<&BTreeMap<String, String>>)> = names
            .iter()
            .zip(&metas)
            .map(|(n, m)| (n.as_path(), m.as_ref()))
            .collect();
        let mut problems = Vec::new();
        check_save_ids(config.as_ref(), &files, &mut problems);
        problems
    }

    #[test]
    fn ids_agree_or_the_pair_is_torn() {
        assert!(run(Some("a"), &[Some("a"), Some("a")]).is_empty());
        assert!(run(None, &[None]).is_empty());
        assert!(run(Some("a"), &[None]).is_empty()); // files of other writers carry none
        let torn = run(Some("a"), &[Some("a"), Some("b")]);
        assert_eq!(torn.len(), 1);
        assert_eq!(torn[0].code, Code::TornSave);
        assert!(torn[0].message.contains("f1 holds save b"));
        assert_eq!(run(None, &[Some("a"), Some("b")]).len(), 1);
    }
}
