//! The Wireshark dissector (dissector/ecr.lua) raises the analyzer's finding codes as
//! expert infos at the same severities: its table between `-- BEGIN CODES` and
//! `-- END CODES` must list every code of `ecr-sniff codes --format json` with the
//! same severity, or name it in CODES_ELSEWHERE (left to Wireshark), and nothing else.
//! dissector/test/run.sh checks the severities tshark actually registers.

use std::collections::BTreeMap;
use std::process::Command;

fn cli_codes() -> BTreeMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ecr-sniff"))
        .args(["codes", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_owned(),
                c["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (codes with severities, codes left elsewhere) from the Lua table.
fn lua_codes() -> (BTreeMap<String, String>, Vec<String>) {
    let lua =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dissector/ecr.lua")).unwrap();
    let start = lua.find("-- BEGIN CODES").expect("BEGIN CODES marker");
    let end = lua.find("-- END CODES").expect("END CODES marker");
    let block = &lua[start..end];
    let (table, elsewhere) = block
        .split_once("CODES_ELSEWHERE")
        .expect("CODES_ELSEWHERE table");
    let mut codes = BTreeMap::new();
    for line in table.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("{ \"") {
            let parts: Vec<&str> = rest.split('"').collect();
            // code", "severity", "GROUP" },
            let (code, sev) = (parts[0], parts[2]);
            assert!(
                codes.insert(code.to_owned(), sev.to_owned()).is_none(),
                "{code} listed twice in ecr.lua"
            );
        }
    }
    let mut other = vec![];
    for line in elsewhere.lines() {
        if let Some(rest) = line.trim().strip_prefix("[\"") {
            other.push(rest.split('"').next().unwrap().to_owned());
        }
    }
    (codes, other)
}

#[test]
fn dissector_severities_match_the_cli() {
    let cli = cli_codes();
    let (lua, elsewhere) = lua_codes();
    assert!(
        lua.len() >= 20,
        "parsed only {} codes from ecr.lua",
        lua.len()
    );
    let mut problems = vec![];
    for (code, sev) in &cli {
        match lua.get(code) {
            Some(s) if s == sev => {}
            Some(s) => problems.push(format!("{code}: CLI {sev}, dissector {s}")),
            None if elsewhere.contains(code) => {}
            None => problems.push(format!(
                "{code} ({sev}) is neither in the dissector's CODES nor in CODES_ELSEWHERE"
            )),
        }
    }
    for code in lua.keys().chain(elsewhere.iter()) {
        if !cli.contains_key(code) {
            problems.push(format!("{code} is in ecr.lua but not in `ecr-sniff codes`"));
        }
    }
    for code in &elsewhere {
        if lua.contains_key(code) {
            problems.push(format!("{code} is in both CODES and CODES_ELSEWHERE"));
        }
    }
    assert!(
        problems.is_empty(),
        "dissector/ecr.lua and `ecr-sniff codes` differ:\n{}",
        problems.join("\n")
    );
}
