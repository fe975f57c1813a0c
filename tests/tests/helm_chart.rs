//! The Helm chart in `helm/absa`, checked without helm or a cluster.
//!
//! A small renderer for the subset of Go templates and Sprig the chart uses (module
//! [`gotmpl`]) renders every template against `values.yaml` (and against overrides that
//! turn on KEDA, the ServiceMonitor, existing Secrets and volumes); every manifest is then
//! parsed as YAML and checked: the fields Kubernetes requires, references between objects
//! (Secrets, ConfigMaps, volumes, ports, scale targets, selectors), the probes, the
//! migrations hook, the trainer's GPU, the TOML the binaries read, the Grafana dashboard
//! against the metrics `absa-api` exports, `values.yaml` against `values.schema.json`
//! (whose defaults it must equal), and the Dockerfiles against `scripts/native.sh`.
//! What this cannot check (full Sprig, the API server's validation, image builds) is
//! listed in `helm/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as J;

use gotmpl::V;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo().join("helm/absa")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A small Go `text/template` engine with the Sprig functions the chart uses, with
/// Helm's conventions: values hold every number as float64 (so `{{ 536870912 }}` from
/// values prints `5.36870912e+08`, as in Helm), `include`, `.Files.Get`, `toYaml` with
/// sorted keys, `required`. Anything else is an error, never silently empty output.
mod gotmpl {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Write as _;
    use std::path::PathBuf;

    #[derive(Clone, Debug, PartialEq)]
    pub enum V {
        Nil,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        List(Vec<V>),
        Map(BTreeMap<String, V>),
    }

    impl V {
        pub fn map(pairs: Vec<(&str, V)>) -> V {
            V::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }

        pub fn str(s: &str) -> V {
            V::Str(s.to_owned())
        }

        pub fn get(&self, key: &str) -> Option<&V> {
            match self {
                V::Map(m) => m.get(key),
                _ => None,
            }
        }

        /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
        pub fn truthy(&self) -> bool {
            match self {
                V::Nil => false,
                V::Bool(b) => *b,
                V::Int(i) => *i != 0,
                V::Float(f) => *f != 0.0,
                V::Str(s) => !s.is_empty(),
                V::List(l) => !l.is_empty(),
                V::Map(m) => !m.is_empty(),
            }
        }

        /// The `reflect.Kind` name Sprig's `kindIs` compares with.
        pub fn kind(&self) -> &'static str {
            match self {
                V::Nil => "invalid",
                V::Bool(_) => "bool",
                V::Int(_) => "int",
                V::Float(_) => "float64",
                V::Str(_) => "string",
                V::List(_) => "slice",
                V::Map(_) => "map",
            }
        }

        fn go_type(&self) -> &'static str {
            match self {
                V::Nil => "<nil>",
                V::Bool(_) => "bool",
                V::Int(_) => "int",
                V::Float(_) => "float64",
                V::Str(_) => "string",
                V::List(_) => "[]interface {}",
                V::Map(_) => "map[string]interface {}",
            }
        }

        /// Values as Helm holds them after reading YAML: every number a float64.
        pub fn from_yaml(y: serde_norway::Value) -> Result<V, String> {
            use serde_norway::Value as Y;
            Ok(match y {
                Y::Null => V::Nil,
                Y::Bool(b) => V::Bool(b),
                Y::Number(n) => V::Float(n.as_f64().ok_or("number out of range")?),
                Y::String(s) => V::Str(s),
                Y::Sequence(items) => V::List(items.into_iter().map(V::from_yaml).collect::<Result<_, _>>()?),
                Y::Mapping(m) => {
                    let mut out = BTreeMap::new();
                    for (k, v) in m {
                        let Y::String(k) = k else { return Err(format!("non-string key {k:?}")) };
                        out.insert(k, V::from_yaml(v)?);
                    }
                    V::Map(out)
                }
                Y::Tagged(t) => V::from_yaml(t.value)?,
            })
        }

        pub fn parse_yaml(text: &str) -> Result<V, String> {
            V::from_yaml(serde_norway::from_str(text).map_err(|e| e.to_string())?)
        }
    }

    /// Helm's coalescing of user values over defaults: maps merge key by key, anything
    /// else replaces, and a null deletes the key.
    pub fn merge(base: &mut V, over: &V) {
        match (base, over) {
            (V::Map(b), V::Map(o)) => {
                for (k, v) in o {
                    if *v == V::Nil {
                        b.remove(k);
                    } else if let Some(existing) = b.get_mut(k) {
                        merge(existing, v);
                    } else {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
            (b, o) => *b = o.clone(),
        }
    }

    // ---- printing, as Go's fmt, encoding/json and sigs.k8s.io/yaml do

    /// `fmt.Sprint` of a float64 (`%v`, i.e. `%g` with the shortest representation:
    /// exponent form from 1e+06 up and below 1e-04).
    pub fn go_float(f: f64) -> String {
        if f.is_nan() {
            return "NaN".into();
        }
        if f.is_infinite() {
            return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
        }
        if f == 0.0 {
            return if f.is_sign_negative() { "-0".into() } else { "0".into() };
        }
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').expect("exponent");
        let exp: i32 = exp.parse().expect("exponent digits");
        if !(-4..6).contains(&exp) {
            format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
        } else {
            format!("{f}")
        }
    }

    /// `encoding/json`'s float64: no exponent between 1e-6 and 1e21, no ".0".
    fn json_float(f: f64) -> String {
        let a = f.abs();
        if a != 0.0 && !(1e-6..1e21).contains(&a) {
            let sci = format!("{f:e}");
            let (mantissa, exp) = sci.split_once('e').expect("exponent");
            let exp: i32 = exp.parse().expect("exponent digits");
            format!("{mantissa}e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs())
        } else {
            format!("{f}")
        }
    }

    /// `fmt.Sprint(v)`.
    pub fn go_print(v: &V) -> String {
        match v {
            V::Nil => "<no value>".into(),
            V::Bool(b) => b.to_string(),
            V::Int(i) => i.to_string(),
            V::Float(f) => go_float(*f),
            V::Str(s) => s.clone(),
            V::List(l) => format!("[{}]", l.iter().map(go_print).collect::<Vec<_>>().join(" ")),
            V::Map(m) => format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", go_print(v))).collect::<Vec<_>>().join(" ")),
        }
    }

    /// Sprig's `strval`.
    fn strval(v: &V) -> String {
        match v {
            V::Nil => "<nil>".into(),
            other => go_print(other),
        }
    }

    /// `strconv.Quote`.
    fn go_quote(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// `json.Marshal` (what Sprig's `toJson` does): sorted keys, HTML-safe escapes.
    pub fn to_json(v: &V) -> String {
        fn string(s: &str, out: &mut String) {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        fn go(v: &V, out: &mut String) {
            match v {
                V::Nil => out.push_str("null"),
                V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                V::Int(i) => out.push_str(&i.to_string()),
                V::Float(f) => out.push_str(&json_float(*f)),
                V::Str(s) => string(s, out),
                V::List(l) => {
                    out.push('[');
                    for (i, x) in l.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        go(x, out);
                    }
                    out.push(']');
                }
                V::Map(m) => {
                    out.push('{');
                    for (i, (k, x)) in m.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        string(k, out);
                        out.push(':');
                        go(x, out);
                    }
                    out.push('}');
                }
            }
        }
        let mut out = String::new();
        go(v, &mut out);
        out
    }

    /// A string that YAML 1.1 (Kubernetes) and 1.2 both read back as that string when
    /// written plain; anything else is double-quoted.
    fn yaml_plain_ok(s: &str) -> bool {
        const WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"];
        let numeric = s.replace('_', "").parse::<f64>().is_ok()
            || ["0x", "0o", "0b"].iter().any(|p| s.starts_with(p))
            || s.chars().all(|c| c.is_ascii_digit() || c == '_' || c == '.');
        !s.is_empty()
            && !numeric
            && !WORDS.contains(&s.to_ascii_lowercase().as_str())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            && !s.starts_with(['-', '.', '+'])
    }

    fn yaml_scalar(v: &V) -> String {
        match v {
            V::Nil => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Int(i) => i.to_string(),
            V::Float(f) => json_float(*f),
            V::Str(s) if yaml_plain_ok(s) => s.clone(),
            V::Str(s) => serde_json::to_string(s).expect("string"),
            V::List(_) => "[]".into(),
            V::Map(_) => "{}".into(),
        }
    }

    /// `toYaml` (sigs.k8s.io/yaml): block style, sorted keys, sequences not indented
    /// under their key, no trailing newline.
    pub fn to_yaml(v: &V) -> String {
        fn block(v: &V, indent: usize, out: &mut String) {
            let pad = " ".repeat(indent);
            match v {
                V::Map(m) if !m.is_empty() => {
                    for (k, x) in m {
                        let key = yaml_scalar(&V::Str(k.clone()));
                        match x {
                            V::Map(inner) if !inner.is_empty() => {
                                let _ = writeln!(out, "{pad}{key}:");
                                block(x, indent + 2, out);
                            }
                            V::List(inner) if !inner.is_empty() => {
                                let _ = writeln!(out, "{pad}{key}:");
                                block(x, indent, out);
                            }
                            _ => {
                                let _ = writeln!(out, "{pad}{key}: {}", yaml_scalar(x));
                            }
                        }
                    }
                }
                V::List(l) if !l.is_empty() => {
                    for x in l {
                        let mut item = String::new();
                        block(x, indent + 2, &mut item);
                        // The item's first line, at indent + 2, gets the dash.
                        let _ = write!(out, "{pad}- {}", &item[indent + 2..]);
                    }
                }
                scalar => {
                    let _ = writeln!(out, "{pad}{}", yaml_scalar(scalar));
                }
            }
        }
        let mut out = String::new();
        block(v, 0, &mut out);
        out.trim_end_matches('\n').to_owned()
    }

    fn base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    // ---- lexing

    #[derive(Clone, Debug, PartialEq)]
    enum Lex {
        Dot,
        Field(Vec<String>),
        Var(String, Vec<String>),
        Ident(String),
        Lit(V),
        Pipe,
        LParen,
        RParen,
        Declare,
        Assign,
        Comma,
    }

    enum Item {
        Text(String),
        Act(Vec<Lex>, usize),
    }

    const SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

    /// Byte offset of the `}}` closing an action (outside string literals).
    fn find_close(s: &str) -> Option<usize> {
        let t = s.trim_start_matches(SPACE);
        if t.starts_with("/*") {
            let start = s.len() - t.len();
            let end = start + t.find("*/")? + 2;
            return s[end..].find("}}").map(|i| end + i);
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'`' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'`' {
                        i += 1;
                    }
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
                _ => {}
            }
            i += 1;
        }
        None
    }

    fn split(src: &str) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        let mut rest = src;
        let mut line = 1;
        let mut trim_next = false;
        loop {
            let Some(open) = rest.find("{{") else {
                let text = if trim_next { rest.trim_start_matches(SPACE) } else { rest };
                if !text.is_empty() {
                    items.push(Item::Text(text.to_owned()));
                }
                return Ok(items);
            };
            let after = &rest[open + 2..];
            let trim_left = after.starts_with('-') && after[1..].starts_with(SPACE);
            let mut text = &rest[..open];
            if trim_next {
                text = text.trim_start_matches(SPACE);
            }
            if trim_left {
                text = text.trim_end_matches(SPACE);
            }
            if !text.is_empty() {
                items.push(Item::Text(text.to_owned()));
            }
            line += rest[..open].matches('\n').count();
            let body_and_rest = if trim_left { &after[1..] } else { after };
            let close = find_close(body_and_rest).ok_or(format!("line {line}: unclosed action"))?;
            let mut body = &body_and_rest[..close];
            trim_next = false;
            if body.ends_with('-') && body[..body.len() - 1].ends_with(SPACE) {
                body = &body[..body.len() - 1];
                trim_next = true;
            }
            let trimmed = body.trim_matches(SPACE);
            if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
                items.push(Item::Act(lex(body).map_err(|e| format!("line {line}: {e}"))?, line));
            }
            line += body_and_rest[..close].matches('\n').count();
            rest = &body_and_rest[close + 2..];
        }
    }

    fn ident_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    fn lex(body: &str) -> Result<Vec<Lex>, String> {
        let chars: Vec<char> = body.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let fields = |i: &mut usize| -> Vec<String> {
            let mut names = Vec::new();
            while *i < chars.len() && chars[*i] == '.' && chars.get(*i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') {
                *i += 1;
                let start = *i;
                while *i < chars.len() && ident_char(chars[*i]) {
                    *i += 1;
                }
                names.push(chars[start..*i].iter().collect());
            }
            names
        };
        while i < chars.len() {
            let c = chars[i];
            match c {
                c if SPACE.contains(&c) => i += 1,
                '|' => {
                    out.push(Lex::Pipe);
                    i += 1;
                }
                '(' => {
                    out.push(Lex::LParen);
                    i += 1;
                }
                ')' => {
                    out.push(Lex::RParen);
                    i += 1;
                    if chars.get(i) == Some(&'.') {
                        return Err("fields of a parenthesised pipeline are not supported".into());
                    }
                }
                ',' => {
                    out.push(Lex::Comma);
                    i += 1;
                }
                ':' if chars.get(i + 1) == Some(&'=') => {
                    out.push(Lex::Declare);
                    i += 2;
                }
                '=' => {
                    out.push(Lex::Assign);
                    i += 1;
                }
                '"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err("unterminated string".into()),
                            Some('"') => break,
                            Some('\\') => {
                                i += 1;
                                match chars.get(i) {
                                    Some('n') => s.push('\n'),
                                    Some('t') => s.push('\t'),
                                    Some('r') => s.push('\r'),
                                    Some('\\') => s.push('\\'),
                                    Some('"') => s.push('"'),
                                    other => return Err(format!("unsupported escape {other:?}")),
                                }
                            }
                            Some(c) => s.push(*c),
                        }
                        i += 1;
                    }
                    i += 1;
                    out.push(Lex::Lit(V::Str(s)));
                }
                '`' => {
                    let start = i + 1;
                    i = start;
                    while i < chars.len() && chars[i] != '`' {
                        i += 1;
                    }
                    if i == chars.len() {
                        return Err("unterminated raw string".into());
                    }
                    out.push(Lex::Lit(V::Str(chars[start..i].iter().collect())));
                    i += 1;
                }
                '.' => {
                    let names = fields(&mut i);
                    if names.is_empty() {
                        out.push(Lex::Dot);
                        i += 1;
                    } else {
                        out.push(Lex::Field(names));
                    }
                }
                '$' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    out.push(Lex::Var(name, fields(&mut i)));
                }
                c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                    let start = i;
                    i += 1;
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                        i += 1;
                    }
                    let text: String = chars[start..i].iter().collect();
                    if let Ok(n) = text.parse::<i64>() {
                        out.push(Lex::Lit(V::Int(n)));
                    } else {
                        out.push(Lex::Lit(V::Float(text.parse().map_err(|_| format!("bad number {text}"))?)));
                    }
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = i;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    if chars.get(i) == Some(&'.') {
                        return Err(format!("unsupported `{word}.`"));
                    }
                    out.push(match word.as_str() {
                        "true" => Lex::Lit(V::Bool(true)),
                        "false" => Lex::Lit(V::Bool(false)),
                        "nil" => Lex::Lit(V::Nil),
                        _ => Lex::Ident(word),
                    });
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok(out)
    }

    // ---- parsing

    #[derive(Clone, Debug)]
    pub enum Term {
        Dot,
        Field(Vec<String>),
        Var(String, Vec<String>),
        Func(String),
        Lit(V),
        Sub(Box<Pipe>),
    }

    #[derive(Clone, Debug, Default)]
    pub struct Pipe {
        decl: Vec<String>,
        assign: bool,
        cmds: Vec<Vec<Term>>,
    }

    #[derive(Clone, Debug)]
    pub enum Node {
        Text(String),
        Out(Pipe, usize),
        If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
        With(Pipe, Vec<Node>, Vec<Node>),
        Range(Pipe, Vec<Node>, Vec<Node>),
        Template(String, Option<Pipe>),
    }

    fn parse_pipe(toks: &[Lex], allow_decl: bool) -> Result<Pipe, String> {
        let mut pipe = Pipe::default();
        let mut pos = 0;
        if allow_decl {
            let mut names = Vec::new();
            let mut p = 0;
            while let Some(Lex::Var(name, f)) = toks.get(p) {
                if !f.is_empty() {
                    break;
                }
                names.push(name.clone());
                p += 1;
                if toks.get(p) == Some(&Lex::Comma) {
                    p += 1;
                } else {
                    break;
                }
            }
            if !names.is_empty() && matches!(toks.get(p), Some(Lex::Declare | Lex::Assign)) {
                pipe.assign = toks[p] == Lex::Assign;
                pipe.decl = names;
                pos = p + 1;
            }
        }
        let (cmds, end) = parse_cmds(toks, pos)?;
        if end != toks.len() {
            return Err(format!("unexpected {:?}", toks[end]));
        }
        pipe.cmds = cmds;
        if pipe.cmds.is_empty() {
            return Err("missing value".into());
        }
        Ok(pipe)
    }

    /// Commands separated by `|` from `pos` up to a `)` or the end; returns where it stopped.
    fn parse_cmds(toks: &[Lex], mut pos: usize) -> Result<(Vec<Vec<Term>>, usize), String> {
        let mut cmds = vec![Vec::new()];
        while pos < toks.len() {
            let term = match &toks[pos] {
                Lex::RParen => break,
                Lex::Pipe => {
                    cmds.push(Vec::new());
                    pos += 1;
                    continue;
                }
                Lex::Dot => Term::Dot,
                Lex::Field(f) => Term::Field(f.clone()),
                Lex::Var(n, f) => Term::Var(n.clone(), f.clone()),
                Lex::Ident(n) => Term::Func(n.clone()),
                Lex::Lit(v) => Term::Lit(v.clone()),
                Lex::LParen => {
                    let (inner, end) = parse_cmds(toks, pos + 1)?;
                    if toks.get(end) != Some(&Lex::RParen) {
                        return Err("unclosed (".into());
                    }
                    pos = end;
                    Term::Sub(Box::new(Pipe { cmds: inner, ..Pipe::default() }))
                }
                other => return Err(format!("unexpected {other:?}")),
            };
            cmds.last_mut().expect("a command").push(term);
            pos += 1;
        }
        if cmds.iter().any(Vec::is_empty) {
            if cmds.len() == 1 {
                return Ok((Vec::new(), pos));
            }
            return Err("empty command in pipeline".into());
        }
        Ok((cmds, pos))
    }

    enum Stop {
        Eof,
        End,
        Else(Vec<Lex>),
    }

    fn keyword(toks: &[Lex]) -> Option<&str> {
        match toks.first() {
            Some(Lex::Ident(w)) if ["if", "else", "end", "range", "with", "define", "template", "block"].contains(&w.as_str()) => Some(w),
            _ => None,
        }
    }

    struct Parser<'a> {
        items: &'a [Item],
        pos: usize,
        defines: &'a mut HashMap<String, Vec<Node>>,
    }

    impl Parser<'_> {
        fn nodes(&mut self) -> Result<(Vec<Node>, Stop), String> {
            let mut nodes = Vec::new();
            while self.pos < self.items.len() {
                let item = &self.items[self.pos];
                self.pos += 1;
                let (toks, line) = match item {
                    Item::Text(t) => {
                        nodes.push(Node::Text(t.clone()));
                        continue;
                    }
                    Item::Act(toks, line) => (toks, *line),
                };
                let at = |e: String| format!("line {line}: {e}");
                match keyword(toks) {
                    Some("end") => return Ok((nodes, Stop::End)),
                    Some("else") => return Ok((nodes, Stop::Else(toks[1..].to_vec()))),
                    Some("if") => {
                        let mut branches = vec![(parse_pipe(&toks[1..], true).map_err(at)?, Vec::new())];
                        let mut else_body = Vec::new();
                        loop {
                            let (body, stop) = self.nodes()?;
                            branches.last_mut().expect("a branch").1 = body;
                            match stop {
                                Stop::End => break,
                                Stop::Else(rest) if rest.first() == Some(&Lex::Ident("if".into())) => {
                                    branches.push((parse_pipe(&rest[1..], true).map_err(at)?, Vec::new()));
                                }
                                Stop::Else(rest) if rest.is_empty() => {
                                    let (body, stop) = self.nodes()?;
                                    if !matches!(stop, Stop::End) {
                                        return Err(at("else without end".into()));
                                    }
                                    else_body = body;
                                    break;
                                }
                                _ => return Err(at("unterminated if".into())),
                            }
                        }
                        nodes.push(Node::If(branches, else_body));
                    }
                    Some(kw @ ("range" | "with")) => {
                        let pipe = parse_pipe(&toks[1..], true).map_err(at)?;
                        let (body, stop) = self.nodes()?;
                        let else_body = match stop {
                            Stop::End => Vec::new(),
                            Stop::Else(rest) if rest.is_empty() => {
                                let (body, stop) = self.nodes()?;
                                if !matches!(stop, Stop::End) {
                                    return Err(at("else without end".into()));
                                }
                                body
                            }
                            _ => return Err(at(format!("unterminated {kw}"))),
                        };
                        nodes.push(if kw == "range" { Node::Range(pipe, body, else_body) } else { Node::With(pipe, body, else_body) });
                    }
                    Some("define") => {
                        let Some(Lex::Lit(V::Str(name))) = toks.get(1) else { return Err(at("define needs a name".into())) };
                        let (body, stop) = self.nodes()?;
                        if !matches!(stop, Stop::End) {
                            return Err(at(format!("unterminated define {name}")));
                        }
                        self.defines.insert(name.clone(), body);
                    }
                    Some("template") => {
                        let Some(Lex::Lit(V::Str(name))) = toks.get(1) else { return Err(at("template needs a name".into())) };
                        let arg = if toks.len() > 2 { Some(parse_pipe(&toks[2..], false).map_err(at)?) } else { None };
                        nodes.push(Node::Template(name.clone(), arg));
                    }
                    Some(other) => return Err(at(format!("`{other}` is not supported"))),
                    None => nodes.push(Node::Out(parse_pipe(toks, true).map_err(at)?, line)),
                }
            }
            Ok((nodes, Stop::Eof))
        }
    }

    // ---- execution

    pub struct Engine {
        defines: HashMap<String, Vec<Node>>,
        /// The chart folder, for `.Files.Get`.
        pub files_root: PathBuf,
    }

    type Vars = Vec<(String, V)>;

    impl Engine {
        pub fn new(files_root: PathBuf) -> Self {
            Self { defines: HashMap::new(), files_root }
        }

        /// Parses a template file; its `define`s become available to every file.
        pub fn parse(&mut self, src: &str) -> Result<Vec<Node>, String> {
            let items = split(src)?;
            let mut parser = Parser { items: &items, pos: 0, defines: &mut self.defines };
            match parser.nodes()? {
                (nodes, Stop::Eof) => Ok(nodes),
                (_, Stop::End) => Err(format!("unexpected end (item {})", parser.pos)),
                (_, Stop::Else(_)) => Err(format!("unexpected else (item {})", parser.pos)),
            }
        }

        pub fn execute(&self, nodes: &[Node], data: &V) -> Result<String, String> {
            let mut out = String::new();
            let mut vars = vec![("".to_owned(), data.clone())];
            self.exec(nodes, data, &mut vars, &mut out, 0)?;
            Ok(out)
        }

        fn exec(&self, nodes: &[Node], dot: &V, vars: &mut Vars, out: &mut String, depth: usize) -> Result<(), String> {
            if depth > 64 {
                return Err("templates nested too deep".into());
            }
            for node in nodes {
                match node {
                    Node::Text(t) => out.push_str(t),
                    Node::Out(pipe, line) => {
                        let v = self.pipe(pipe, dot, vars, depth).map_err(|e| format!("line {line}: {e}"))?;
                        if pipe.decl.is_empty() {
                            out.push_str(&go_print(&v));
                        }
                    }
                    Node::If(branches, else_body) => {
                        let mark = vars.len();
                        let mut done = false;
                        for (cond, body) in branches {
                            if self.pipe(cond, dot, vars, depth)?.truthy() {
                                self.exec(body, dot, vars, out, depth + 1)?;
                                done = true;
                                break;
                            }
                        }
                        if !done {
                            self.exec(else_body, dot, vars, out, depth + 1)?;
                        }
                        vars.truncate(mark);
                    }
                    Node::With(pipe, body, else_body) => {
                        let mark = vars.len();
                        let v = self.pipe(pipe, dot, vars, depth)?;
                        if v.truthy() {
                            self.exec(body, &v, vars, out, depth + 1)?;
                        } else {
                            self.exec(else_body, dot, vars, out, depth + 1)?;
                        }
                        vars.truncate(mark);
                    }
                    Node::Range(pipe, body, else_body) => {
                        let mark = vars.len();
                        let inner = Pipe { decl: Vec::new(), assign: false, cmds: pipe.cmds.clone() };
                        let v = self.pipe(&inner, dot, vars, depth)?;
                        let entries: Vec<(V, V)> = match &v {
                            V::List(l) => l.iter().enumerate().map(|(i, x)| (V::Int(i as i64), x.clone())).collect(),
                            V::Map(m) => m.iter().map(|(k, x)| (V::Str(k.clone()), x.clone())).collect(),
                            V::Nil => Vec::new(),
                            other => return Err(format!("range can't iterate over {}", go_print(other))),
                        };
                        if entries.is_empty() {
                            self.exec(else_body, dot, vars, out, depth + 1)?;
                        }
                        for (k, x) in entries {
                            let iter_mark = vars.len();
                            match pipe.decl.as_slice() {
                                [] => {}
                                [value] => vars.push((value.clone(), x.clone())),
                                [key, value] => {
                                    vars.push((key.clone(), k));
                                    vars.push((value.clone(), x.clone()));
                                }
                                _ => return Err("too many range variables".into()),
                            }
                            self.exec(body, &x, vars, out, depth + 1)?;
                            vars.truncate(iter_mark);
                        }
                        vars.truncate(mark);
                    }
                    Node::Template(name, arg) => {
                        let data = match arg {
                            Some(p) => self.pipe(p, dot, vars, depth)?,
                            None => V::Nil,
                        };
                        out.push_str(&self.include(name, &data, depth)?);
                    }
                }
            }
            Ok(())
        }

        fn include(&self, name: &str, data: &V, depth: usize) -> Result<String, String> {
            let body = self.defines.get(name).ok_or(format!("no template {name:?}"))?;
            let mut out = String::new();
            let mut vars = vec![("".to_owned(), data.clone())];
            self.exec(body, data, &mut vars, &mut out, depth + 1).map_err(|e| format!("in {name:?}: {e}"))?;
            Ok(out)
        }

        fn pipe(&self, pipe: &Pipe, dot: &V, vars: &mut Vars, depth: usize) -> Result<V, String> {
            let mut value = None;
            for cmd in &pipe.cmds {
                value = Some(self.cmd(cmd, dot, vars, value, depth)?);
            }
            let value = value.ok_or("empty pipeline")?;
            match pipe.decl.as_slice() {
                [] => {}
                [name] if pipe.assign => {
                    let slot = vars.iter_mut().rev().find(|(n, _)| n == name).ok_or(format!("undefined variable ${name}"))?;
                    slot.1 = value.clone();
                }
                [name] => vars.push((name.clone(), value.clone())),
                _ => return Err("only one variable may be declared here".into()),
            }
            Ok(value)
        }

        fn field(v: &V, names: &[String], what: &str) -> Result<V, String> {
            static NIL: V = V::Nil;
            let mut cur = v;
            for (i, n) in names.iter().enumerate() {
                cur = match cur {
                    V::Map(m) => m.get(n).unwrap_or(&NIL),
                    V::Nil => return Err(format!("nil pointer evaluating {what}.{}", names[..=i].join("."))),
                    other => return Err(format!("can't evaluate field {n} in type {}", other.go_type())),
                };
            }
            Ok(cur.clone())
        }

        fn term(&self, t: &Term, dot: &V, vars: &mut Vars, depth: usize) -> Result<V, String> {
            match t {
                Term::Dot => Ok(dot.clone()),
                Term::Field(names) => Self::field(dot, names, ""),
                Term::Var(name, names) => {
                    let v = &vars.iter().rev().find(|(n, _)| n == name).ok_or(format!("undefined variable ${name}"))?.1;
                    Self::field(v, names, &format!("${name}"))
                }
                Term::Lit(v) => Ok(v.clone()),
                Term::Sub(p) => self.pipe(p, dot, vars, depth),
                Term::Func(name) => self.call(name, Vec::new(), depth),
            }
        }

        fn cmd(&self, cmd: &[Term], dot: &V, vars: &mut Vars, piped: Option<V>, depth: usize) -> Result<V, String> {
            match &cmd[0] {
                Term::Func(name) if name == "and" || name == "or" => {
                    // Go evaluates these lazily and returns the deciding operand.
                    let mut last = V::Nil;
                    for t in &cmd[1..] {
                        last = self.term(t, dot, vars, depth)?;
                        if last.truthy() != (name == "and") {
                            return Ok(last);
                        }
                    }
                    if let Some(p) = piped {
                        last = p;
                    }
                    Ok(last)
                }
                Term::Func(name) => {
                    let mut args = Vec::new();
                    for t in &cmd[1..] {
                        args.push(self.term(t, dot, vars, depth)?);
                    }
                    args.extend(piped);
                    self.call(name, args, depth)
                }
                Term::Field(names) if names.len() == 2 && names[0] == "Files" && names[1] == "Get" => {
                    let mut args = Vec::new();
                    for t in &cmd[1..] {
                        args.push(self.term(t, dot, vars, depth)?);
                    }
                    args.extend(piped);
                    let [V::Str(path)] = args.as_slice() else { return Err(".Files.Get takes one path".into()) };
                    // Helm answers "" for a missing file; a missing dashboard must not pass silently.
                    std::fs::read_to_string(self.files_root.join(path)).map(V::Str).map_err(|e| format!(".Files.Get {path}: {e}"))
                }
                other => {
                    if cmd.len() > 1 || piped.is_some() {
                        return Err(format!("{other:?} is not a function and takes no arguments"));
                    }
                    self.term(other, dot, vars, depth)
                }
            }
        }

        fn call(&self, name: &str, args: Vec<V>, depth: usize) -> Result<V, String> {
            let s = |v: &V| -> Result<String, String> {
                match v {
                    V::Str(s) => Ok(s.clone()),
                    other => Err(format!("{name}: wrong type for value; expected string; got {}", other.go_type())),
                }
            };
            let int = |v: &V| -> Result<i64, String> {
                match v {
                    V::Int(i) => Ok(*i),
                    other => Err(format!("{name}: wrong type for value; expected int; got {}", other.go_type())),
                }
            };
            let arity = |n: usize| -> Result<(), String> {
                if args.len() == n {
                    Ok(())
                } else {
                    Err(format!("wrong number of args for {name}: want {n} got {}", args.len()))
                }
            };
            let empty = |v: &V| !v.truthy();
            Ok(match name {
                "include" => {
                    arity(2)?;
                    V::Str(self.include(&s(&args[0])?, &args[1], depth)?)
                }
                "toYaml" => {
                    arity(1)?;
                    V::Str(to_yaml(&args[0]))
                }
                "toJson" => {
                    arity(1)?;
                    V::Str(to_json(&args[0]))
                }
                "indent" | "nindent" => {
                    arity(2)?;
                    let pad = " ".repeat(usize::try_from(int(&args[0])?).map_err(|e| e.to_string())?);
                    let text = format!("{pad}{}", s(&args[1])?.replace('\n', &format!("\n{pad}")));
                    V::Str(if name == "nindent" { format!("\n{text}") } else { text })
                }
                "quote" => V::Str(args.iter().filter(|a| **a != V::Nil).map(|a| go_quote(&strval(a))).collect::<Vec<_>>().join(" ")),
                "default" => {
                    if args.is_empty() || args.len() > 2 {
                        return Err("default takes 1 or 2 arguments".into());
                    }
                    match args.get(1) {
                        Some(given) if !empty(given) => given.clone(),
                        _ => args[0].clone(),
                    }
                }
                "required" => {
                    arity(2)?;
                    match &args[1] {
                        V::Nil => return Err(s(&args[0])?),
                        V::Str(x) if x.is_empty() => return Err(s(&args[0])?),
                        other => other.clone(),
                    }
                }
                "fail" => return Err(s(&args[0])?),
                "printf" => {
                    let format = s(args.first().ok_or("printf needs a format")?)?;
                    V::Str(printf(&format, &args[1..]))
                }
                "print" => V::Str(args.iter().map(go_print).collect::<Vec<_>>().join("")),
                "trunc" => {
                    arity(2)?;
                    let n = int(&args[0])?;
                    let text = s(&args[1])?;
                    V::Str(if n >= 0 && text.len() > n as usize { text[..n as usize].to_owned() } else { text })
                }
                "trimSuffix" => {
                    arity(2)?;
                    let (suffix, text) = (s(&args[0])?, s(&args[1])?);
                    V::Str(text.strip_suffix(suffix.as_str()).unwrap_or(&text).to_owned())
                }
                "replace" => {
                    arity(3)?;
                    V::Str(s(&args[2])?.replace(&s(&args[0])?, &s(&args[1])?))
                }
                "contains" => {
                    arity(2)?;
                    V::Bool(s(&args[1])?.contains(&s(&args[0])?))
                }
                "not" => {
                    arity(1)?;
                    V::Bool(!args[0].truthy())
                }
                "eq" | "ne" => {
                    if args.len() < 2 {
                        return Err(format!("{name} needs two arguments"));
                    }
                    let mut any = false;
                    for other in &args[1..] {
                        if std::mem::discriminant(&args[0]) != std::mem::discriminant(other) || args[0] == V::Nil {
                            return Err(format!("incompatible types for comparison: {} and {}", args[0].go_type(), other.go_type()));
                        }
                        any |= args[0] == *other;
                    }
                    V::Bool(if name == "eq" { any } else { !any })
                }
                "kindIs" => {
                    arity(2)?;
                    V::Bool(s(&args[0])? == args[1].kind())
                }
                "dict" => {
                    let mut m = BTreeMap::new();
                    for pair in args.chunks(2) {
                        m.insert(s(&pair[0])?, pair.get(1).cloned().unwrap_or(V::str("")));
                    }
                    V::Map(m)
                }
                "list" => V::List(args),
                "b64enc" => {
                    arity(1)?;
                    V::Str(base64(s(&args[0])?.as_bytes()))
                }
                "sha256sum" => {
                    use sha2::Digest;
                    arity(1)?;
                    V::Str(sha2::Sha256::digest(s(&args[0])?.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
                }
                "toString" => {
                    arity(1)?;
                    V::Str(strval(&args[0]))
                }
                other => return Err(format!("function {other:?} not defined (the chart test's renderer knows a subset of Sprig)")),
            })
        }
    }

    /// `fmt.Sprintf` for the verbs the chart uses, with Go's error strings (so a `%d` of
    /// a float64 from values shows up as `%!d(float64=8080)`, as it would in Helm).
    fn printf(format: &str, args: &[V]) -> String {
        let mut out = String::new();
        let mut chars = format.chars();
        let mut next = args.iter();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(verb) = chars.next() else {
                out.push_str("%!(NOVERB)");
                break;
            };
            if verb == '%' {
                out.push('%');
                continue;
            }
            let Some(arg) = next.next() else {
                let _ = write!(out, "%!{verb}(MISSING)");
                continue;
            };
            match (verb, arg) {
                ('v', a) => out.push_str(&go_print(a)),
                ('s', V::Str(x)) => out.push_str(x),
                ('d', V::Int(i)) => out.push_str(&i.to_string()),
                ('q', V::Str(x)) => out.push_str(&go_quote(x)),
                (verb, a) => {
                    let _ = write!(out, "%!{verb}({}={})", a.go_type(), go_print(a));
                }
            }
        }
        for extra in next {
            let _ = write!(out, "%!(EXTRA {}={})", extra.go_type(), go_print(extra));
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Rendering the chart

struct Manifest {
    template: String,
    /// The document as rendered.
    text: String,
    obj: J,
}

struct Rendered {
    manifests: Vec<Manifest>,
    notes: String,
    values: V,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&J> {
        self.manifests.iter().filter(|m| m.obj["kind"] == kind).map(|m| &m.obj).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&J> {
        self.manifests.iter().map(|m| &m.obj).find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &J {
        self.find(kind, name).unwrap_or_else(|| panic!("no {kind} {name} rendered; have {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.manifests.iter().map(|m| format!("{}/{}", m.obj["kind"].as_str().unwrap_or("?"), m.obj["metadata"]["name"].as_str().unwrap_or("?"))).collect()
    }

    fn value(&self, path: &str) -> V {
        path.split('.').fold(self.values.clone(), |v, k| v.get(k).cloned().unwrap_or(V::Nil))
    }

    fn value_str(&self, path: &str) -> String {
        match self.value(path) {
            V::Str(s) => s,
            other => panic!("{path} is {other:?}, not a string"),
        }
    }

    fn value_num(&self, path: &str) -> f64 {
        match self.value(path) {
            V::Float(f) => f,
            other => panic!("{path} is {other:?}, not a number"),
        }
    }
}

const RELEASE: &str = "prod";
const NAMESPACE: &str = "absa";

fn capitalised(key: &str) -> String {
    let mut c = key.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

fn template_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates")).expect("templates folder").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

/// Renders the chart as `helm template RELEASE helm/absa -f overrides` would.
fn render(overrides: &str) -> Result<Rendered, String> {
    let dir = chart_dir();
    let mut values = V::parse_yaml(&read(&dir.join("values.yaml")))?;
    if !overrides.trim().is_empty() {
        gotmpl::merge(&mut values, &V::parse_yaml(overrides)?);
    }
    let chart_yaml = V::parse_yaml(&read(&dir.join("Chart.yaml")))?;
    let V::Map(chart_fields) = chart_yaml else { return Err("Chart.yaml is not a map".into()) };
    let chart = V::Map(chart_fields.into_iter().map(|(k, v)| (capitalised(&k), v)).collect());
    let mut engine = gotmpl::Engine::new(dir.clone());
    let mut parsed = Vec::new();
    for path in template_files() {
        let name = path.file_name().expect("file name").to_string_lossy().into_owned();
        let nodes = engine.parse(&read(&path)).map_err(|e| format!("{name}: {e}"))?;
        parsed.push((name, nodes));
    }
    let mut manifests = Vec::new();
    let mut notes = String::new();
    for (name, nodes) in &parsed {
        if name.starts_with('_') {
            continue;
        }
        let data = V::map(vec![
            ("Values", values.clone()),
            ("Chart", chart.clone()),
            (
                "Release",
                V::map(vec![
                    ("Name", V::str(RELEASE)),
                    ("Namespace", V::str(NAMESPACE)),
                    ("Service", V::str("Helm")),
                    ("IsInstall", V::Bool(true)),
                    ("IsUpgrade", V::Bool(false)),
                    ("Revision", V::Int(1)),
                ]),
            ),
            ("Template", V::map(vec![("Name", V::Str(format!("absa/templates/{name}"))), ("BasePath", V::str("absa/templates"))])),
            ("Files", V::map(vec![])),
        ]);
        let text = engine.execute(nodes, &data).map_err(|e| format!("{name}: {e}"))?;
        if text.contains("<no value>") {
            return Err(format!("{name} printed a missing value:\n{text}"));
        }
        if name == "NOTES.txt" {
            notes = text;
            continue;
        }
        for doc in split_documents(&text) {
            let obj: J = serde_norway::from_str(&doc).map_err(|e| format!("{name}: {e}\n{doc}"))?;
            if !obj.is_object() {
                return Err(format!("{name}: a document that is not an object:\n{doc}"));
            }
            manifests.push(Manifest { template: name.clone(), text: doc, obj });
        }
    }
    Ok(Rendered { manifests, notes, values })
}

/// Helm's split of a rendered file into documents, dropping whitespace-only ones.
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("a document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn render_ok(overrides: &str) -> Rendered {
    render(overrides).unwrap_or_else(|e| panic!("render failed: {e}"))
}

/// With HELM_CHART_RENDER_TO=DIR, the default render and the everything-on render are
/// written to DIR/default and DIR/all-on (one file per object, plus NOTES.txt), for
/// reading, for comparing with `helm template`, or for `kubectl apply --dry-run=server`.
fn write_render(r: &Rendered, name: &str) {
    let Some(dir) = std::env::var_os("HELM_CHART_RENDER_TO") else { return };
    let dir = PathBuf::from(dir).join(name);
    std::fs::create_dir_all(&dir).expect("render folder");
    for (i, m) in r.manifests.iter().enumerate() {
        let name = format!("{i:02}-{}-{}.yaml", m.obj["kind"].as_str().unwrap_or("x").to_lowercase(), m.obj["metadata"]["name"].as_str().unwrap_or("x"));
        std::fs::write(dir.join(name), format!("# Source: absa/templates/{}\n{}", m.template, m.text)).expect("write");
    }
    std::fs::write(dir.join("NOTES.txt"), &r.notes).expect("write notes");
}

/// Everything turned on: KEDA instead of the HPA, the ServiceMonitor, existing Secrets,
/// an artifacts volume, a models claim, overrides of names and images.
const ALL_ON: &str = r#"
fullnameOverride: absa
image: {registry: "", tag: "1.2.3"}
imagePullSecrets: [{name: regcred}]
podAnnotations: {team: nlp}
serviceAccount: {create: false, name: absa-runner}
database: {existingSecret: pg-credentials, secretKey: uri, url: ""}
amqp: {existingSecret: mq-credentials, secretKey: uri, url: ""}
config:
  worker: {artifacts_dir: /var/lib/absa/artifacts}
  onnx: {intra_threads: 4}
  amqp: {prefix: absa-prod}
persistence: {artifacts: {existingClaim: absa-artifacts}}
api: {extraEnv: [{name: RUST_BACKTRACE, value: "1"}], nodeSelector: {pool: web}}
scorer:
  keda: {enabled: true, cpuUtilization: 0}
  tolerations: [{key: spot, operator: Exists}]
trainer:
  image: {tag: "1.2.3-cuda"}
  models: {existingClaim: base-models}
metrics: {key: {existingSecret: scrape-key}, serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}}
grafana: {dashboard: {labels: {team: nlp}, annotations: {grafana_folder: ABSA}}}
"#;

// ---------------------------------------------------------------------------------
// Generic checks on every rendered manifest

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_label(s: &str) -> bool {
    is_dns_subdomain(s) && s.len() <= 63 && !s.contains('.')
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn string_map(v: &J, what: &str) -> BTreeMap<String, String> {
    match v {
        J::Null => BTreeMap::new(),
        J::Object(m) => m
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_else(|| panic!("{what}: {k} is {x}, not a string (Kubernetes wants strings)")).to_owned()))
            .collect(),
        other => panic!("{what} is {other}, not a map"),
    }
}

fn subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

fn hook_events(o: &J) -> Option<&str> {
    o["metadata"]["annotations"]["helm.sh/hook"].as_str()
}

fn hook_weight(o: &J) -> i64 {
    o["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().map_or(0, |w| w.parse().expect("hook weight is an integer string"))
}

/// Scalars that YAML 1.1 (what Kubernetes parses) reads as booleans.
fn yaml11_trap(s: &str) -> bool {
    ["y", "yes", "n", "no", "on", "off"].contains(&s.to_ascii_lowercase().as_str())
}

fn walk_strings<'a>(v: &'a J, out: &mut Vec<&'a str>) {
    match v {
        J::String(s) => out.push(s),
        J::Array(a) => a.iter().for_each(|x| walk_strings(x, out)),
        J::Object(m) => {
            for (k, x) in m {
                out.push(k);
                walk_strings(x, out);
            }
        }
        _ => {}
    }
}

const KINDS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
];

fn check_common(r: &Rendered) {
    let mut seen = BTreeSet::new();
    for m in &r.manifests {
        let o = &m.obj;
        let what = format!("{} ({})", o["metadata"]["name"], m.template);
        let api_version = o["apiVersion"].as_str().unwrap_or_else(|| panic!("{what}: no apiVersion"));
        let kind = o["kind"].as_str().unwrap_or_else(|| panic!("{what}: no kind"));
        assert!(KINDS.contains(&(api_version, kind)), "{what}: unexpected {api_version} {kind}");
        let name = o["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{what}: no metadata.name"));
        assert!(is_dns_subdomain(name), "{what}: name {name:?} is not a DNS subdomain");
        if kind == "Service" {
            assert!(is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()), "{what}: a Service name must be a DNS-1035 label");
        }
        assert!(o["metadata"].get("namespace").is_none(), "{what}: namespace is left to helm");
        assert!(seen.insert((kind.to_owned(), name.to_owned())), "{what}: two {kind} objects named {name}");
        let labels = string_map(&o["metadata"]["labels"], &format!("{what} labels"));
        for (k, v) in &labels {
            assert!(is_label_value(v), "{what}: label {k}={v:?} is not a valid label value");
        }
        assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some(RELEASE), "{what}: instance label");
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("Helm"), "{what}: managed-by label");
        string_map(&o["metadata"]["annotations"], &format!("{what} annotations"));
        let mut strings = Vec::new();
        walk_strings(o, &mut strings);
        for s in strings {
            assert!(!yaml11_trap(s), "{what}: {s:?} would be a boolean for Kubernetes' YAML 1.1 parser if written plain");
        }
        if kind == "Secret" {
            for (k, v) in o["data"].as_object().unwrap_or_else(|| panic!("{what}: Secret without data")) {
                let v = v.as_str().unwrap_or_else(|| panic!("{what}: data.{k} is not a string"));
                assert!(v.len() % 4 == 0 && v.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)), "{what}: data.{k} is not base64");
            }
        }
        if kind == "ConfigMap" {
            string_map(&o["data"], &format!("{what} data"));
        }
        if let Some(events) = hook_events(o) {
            assert_eq!(events, "pre-install,pre-upgrade", "{what}: the only hooks are the migrations'");
            let policy = o["metadata"]["annotations"]["helm.sh/hook-delete-policy"].as_str().unwrap_or_else(|| panic!("{what}: hook without a delete policy"));
            assert!(policy.split(',').any(|p| p == "before-hook-creation"), "{what}: a re-run hook must replace its leftovers");
        }
    }
}

/// The pod spec of a Deployment or Job.
fn pod_spec(o: &J) -> &J {
    &o["spec"]["template"]["spec"]
}

fn container<'a>(o: &'a J, name: &str) -> &'a J {
    pod_spec(o)["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {}", o["metadata"]["name"]))
}

fn env_value<'a>(c: &'a J, name: &str) -> Option<&'a J> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// Every referenced Secret, ConfigMap, volume, port and service account exists, env
/// values are strings, the root filesystem is read-only and what is written is a volume.
fn check_pods(r: &Rendered) {
    let existing_secrets: BTreeSet<String> =
        ["database.existingSecret", "amqp.existingSecret", "metrics.key.existingSecret"].iter().map(|p| r.value_str(p)).filter(|s| !s.is_empty()).collect();
    for m in &r.manifests {
        let o = &m.obj;
        let kind = o["kind"].as_str().expect("kind");
        if kind != "Deployment" && kind != "Job" {
            continue;
        }
        let name = o["metadata"]["name"].as_str().expect("name");
        let hook = hook_events(o);
        let spec = pod_spec(o);
        // Objects this pod can rely on: hooks may only use hooks of a lower weight (the
        // release's own objects do not exist yet on install); workloads use non-hooks.
        let available = |k: &str, n: &str| -> bool {
            r.manifests.iter().map(|x| &x.obj).any(|x| {
                x["kind"] == k
                    && x["metadata"]["name"] == n
                    && match hook {
                        None => hook_events(x).is_none(),
                        Some(events) => hook_events(x) == Some(events) && hook_weight(x) < hook_weight(o),
                    }
            })
        };
        let template_labels = string_map(&o["spec"]["template"]["metadata"]["labels"], &format!("{name} pod labels"));
        string_map(&o["spec"]["template"]["metadata"]["annotations"], &format!("{name} pod annotations"));
        if kind == "Deployment" {
            let selector = string_map(&o["spec"]["selector"]["matchLabels"], &format!("{name} selector"));
            assert!(!selector.is_empty(), "{name}: empty selector");
            assert!(subset(&selector, &template_labels), "{name}: selector {selector:?} does not match the pod labels {template_labels:?}");
            for other in r.all("Deployment") {
                if other["metadata"]["name"] != name {
                    let other_labels = string_map(&other["spec"]["template"]["metadata"]["labels"], "pod labels");
                    assert!(!subset(&selector, &other_labels), "{name}: its selector also selects {}'s pods", other["metadata"]["name"]);
                }
            }
            assert!(hook.is_none(), "{name}: a Deployment must not be a hook");
        } else {
            assert_eq!(spec["restartPolicy"], "Never", "{name}: Job pods");
        }
        let sa = spec["serviceAccountName"].as_str().expect("serviceAccountName");
        if r.value("serviceAccount.create") == V::Bool(true) {
            assert!(r.find("ServiceAccount", sa).is_some(), "{name}: service account {sa} not rendered");
        }
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}: no role calls the Kubernetes API");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}: runAsNonRoot");
        let volumes: BTreeMap<&str, &J> = spec["volumes"].as_array().expect("volumes").iter().map(|v| (v["name"].as_str().expect("volume name"), v)).collect();
        let mut mounted = BTreeSet::new();
        for c in spec["containers"].as_array().expect("containers") {
            let cname = format!("{name}/{}", c["name"].as_str().expect("container name"));
            let image = c["image"].as_str().unwrap_or_else(|| panic!("{cname}: no image"));
            let (_, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{cname}: image {image} has no tag"));
            assert!(!tag.is_empty() && !tag.contains('/'), "{cname}: image {image} has no tag");
            // The distributed run's ranks take the launcher's flags and their train command.
            let launcher = c["args"][0] == "launch";
            assert!(c["args"].as_array().is_some_and(|a| a.len() == 1 || launcher), "{cname}: one subcommand as args");
            assert!(c["resources"]["requests"]["memory"].is_string(), "{cname}: memory request");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{cname}: memory limit");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{cname}: read-only root filesystem");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{cname}");
            let ports: BTreeSet<&str> = c["ports"].as_array().map(|p| p.iter().map(|p| p["name"].as_str().expect("port name")).collect()).unwrap_or_default();
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if let Some(port) = c[probe]["httpGet"]["port"].as_str() {
                    assert!(ports.contains(port), "{cname}: {probe} uses port {port} which is not declared");
                }
            }
            let mut env_names = BTreeSet::new();
            for e in c["env"].as_array().expect("env") {
                let ename = e["name"].as_str().expect("env name");
                assert!(env_names.insert(ename), "{cname}: env {ename} twice");
                match (e.get("value"), e.get("valueFrom")) {
                    (Some(v), None) => assert!(v.is_string(), "{cname}: env {ename} = {v} must be a string"),
                    (None, Some(from)) => {
                        let sref = &from["secretKeyRef"];
                        let sname = sref["name"].as_str().unwrap_or_else(|| panic!("{cname}: {ename} from something other than a Secret"));
                        let key = sref["key"].as_str().expect("secret key");
                        if !existing_secrets.contains(sname) {
                            assert!(available("Secret", sname), "{cname}: {ename} reads Secret {sname}, not available to it");
                            let secret = r.get("Secret", sname);
                            assert!(secret["data"].get(key).is_some(), "{cname}: Secret {sname} has no key {key}");
                        }
                    }
                    _ => panic!("{cname}: env {ename} needs exactly one of value and valueFrom"),
                }
            }
            let mut paths = BTreeMap::new();
            for vm in c["volumeMounts"].as_array().expect("volumeMounts") {
                let vname = vm["name"].as_str().expect("mount name");
                assert!(volumes.contains_key(vname), "{cname}: mounts undefined volume {vname}");
                mounted.insert(vname);
                let path = vm["mountPath"].as_str().expect("mountPath");
                assert!(path.starts_with('/'), "{cname}: mount path {path}");
                assert!(paths.insert(path.to_owned(), (vname, vm["readOnly"] == true)).is_none(), "{cname}: two mounts at {path}");
            }
            // ABSA_CONFIG names a key of the ConfigMap mounted at its folder.
            let config = env_value(c, "ABSA_CONFIG").unwrap_or_else(|| panic!("{cname}: no ABSA_CONFIG"))["value"].as_str().expect("ABSA_CONFIG value");
            let (dir, file) = config.rsplit_once('/').expect("ABSA_CONFIG is a path");
            let (vname, _) = paths.get(dir).unwrap_or_else(|| panic!("{cname}: nothing mounted at {dir}"));
            let cm_name = volumes[vname]["configMap"]["name"].as_str().unwrap_or_else(|| panic!("{cname}: {dir} is not a ConfigMap"));
            assert!(available("ConfigMap", cm_name), "{cname}: ConfigMap {cm_name} not available to it");
            assert!(r.get("ConfigMap", cm_name)["data"].get(file).is_some(), "{cname}: ConfigMap {cm_name} has no {file}");
            // With a read-only root filesystem, every folder the binary writes is a writable volume.
            let mut writes = vec!["/tmp".to_owned()];
            let role = c["name"].as_str().expect("name");
            if role == "api" {
                writes.push(r.value_str("config.api.upload_dir"));
            }
            if role == "trainer" || role == "scorer" {
                writes.push(r.value_str("config.worker.work_dir"));
                writes.push(r.value_str("config.worker.cache_dir"));
                if let V::Str(dir) = r.value("config.worker.artifacts_dir") {
                    writes.push(dir);
                }
            }
            for w in writes {
                let (vname, read_only) = paths.get(&w).unwrap_or_else(|| panic!("{cname}: writes {w} but nothing is mounted there"));
                assert!(!read_only, "{cname}: {w} ({vname}) is mounted read-only");
            }
        }
        for (vname, v) in &volumes {
            assert!(mounted.contains(vname), "{name}: volume {vname} is never mounted");
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(available("ConfigMap", cm), "{name}: volume {vname} uses ConfigMap {cm}, not available to it");
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(existing_secrets.contains(s) || available("Secret", s), "{name}: volume {vname} uses Secret {s}");
            }
            if v.get("persistentVolumeClaim").is_some() {
                assert!(v["persistentVolumeClaim"]["claimName"].as_str().is_some_and(|c| !c.is_empty()), "{name}: volume {vname} without a claim");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// README, metrics.rs, native.sh: the facts the chart must agree with

/// The settings the binaries read, from their `Settings` structs (api, scheduler,
/// trainer, scorer) and the section structs they hold: `section.key` for a field of a
/// section struct, `key` for a plain field (`models_dir`). The README's Configuration
/// table documents the same keys.
fn binary_settings_keys() -> BTreeSet<String> {
    let files = [
        "platform/src/config.rs",
        "platform/src/worker.rs",
        "api/src/settings.rs",
        "scheduler/src/settings.rs",
        "trainer/src/settings.rs",
        "scorer/src/settings.rs",
    ];
    // struct name -> (field, type) of every `pub struct Name { pub field: Type, ... }`.
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut settings = 0;
    let mut plain_and_sections = Vec::new();
    for file in files {
        let src = read(&repo().join(file));
        let mut lines = src.lines();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("pub struct ") else { continue };
            let Some(name) = rest.strip_suffix(" {") else { continue };
            let mut fields = Vec::new();
            for body in lines.by_ref().take_while(|l| *l != "}") {
                if let Some((field, ty)) = body.trim().strip_prefix("pub ").and_then(|f| f.split_once(':')) {
                    fields.push((field.trim().to_owned(), ty.trim().trim_end_matches(',').to_owned()));
                }
            }
            if name == "Settings" {
                settings += 1;
                plain_and_sections.extend(fields);
            } else {
                structs.insert(name.to_owned(), fields);
            }
        }
    }
    assert_eq!(settings, 4, "one Settings struct per binary");
    let mut keys = BTreeSet::new();
    for (field, ty) in plain_and_sections {
        match structs.get(&ty) {
            Some(section) => keys.extend(section.iter().map(|(k, _)| format!("{field}.{k}"))),
            None => {
                keys.insert(field);
            }
        }
    }
    for expected in [
        "database.url",
        "amqp.prefix",
        "http.bind",
        "api.max_upload_bytes",
        "dispatch.shard_size",
        "worker.lease_secs",
        "torch.threads",
        "onnx.precision",
        "models_dir",
    ] {
        assert!(keys.contains(expected), "settings structs parsed wrongly: no {expected} in {keys:?}");
    }
    keys
}

/// `ABSA_<SECTION>__<KEY>` (or `ABSA_<KEY>`) of a settings key, as platform::config reads it.
fn env_name(key: &str) -> String {
    format!("ABSA_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Metric names `absa-api` exports (the `header!` lines of api/src/metrics.rs).
fn exported_metrics() -> BTreeSet<String> {
    let src = read(&repo().join("api/src/metrics.rs"));
    let names: BTreeSet<String> = src.split("header!(\"").skip(1).map(|s| s.split('"').next().expect("name").to_owned()).collect();
    assert!(names.contains("absa_jobs"), "metrics.rs parsed wrongly: {names:?}");
    names
}

fn native_version(var: &str) -> String {
    let script = read(&repo().join("scripts/native.sh"));
    let line = script.lines().find(|l| l.starts_with(&format!("{var}="))).unwrap_or_else(|| panic!("{var} not in scripts/native.sh"));
    line[var.len() + 1..].split_whitespace().next().expect("value").trim_matches('"').to_owned()
}

fn workspace_version() -> String {
    let cargo: toml::Table = read(&repo().join("Cargo.toml")).parse().expect("Cargo.toml");
    cargo["workspace"]["package"]["version"].as_str().expect("workspace version").to_owned()
}

// ---------------------------------------------------------------------------------
// values.schema.json: defaults and a validator for the keywords it uses

mod schema {
    use serde_json::Value as J;

    const KEYWORDS: &[&str] = &[
        "$schema",
        "title",
        "description",
        "default",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "enum",
        "minimum",
        "maximum",
        "minLength",
    ];

    fn type_ok(t: &str, v: &J) -> bool {
        match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "number" => v.is_number(),
            "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
            other => panic!("schema type {other} not supported by this validator"),
        }
    }

    /// Errors of `v` against `schema` (draft-07 semantics for the keywords in KEYWORDS;
    /// any other keyword is refused so this validator never silently ignores a rule).
    pub fn validate(schema: &J, v: &J, path: &str, errors: &mut Vec<String>) {
        let s = schema.as_object().unwrap_or_else(|| panic!("{path}: schema is not an object"));
        for k in s.keys() {
            assert!(KEYWORDS.contains(&k.as_str()), "{path}: schema keyword {k} not supported by this validator");
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                J::String(t) => vec![t],
                J::Array(ts) => ts.iter().map(|t| t.as_str().expect("type name")).collect(),
                _ => panic!("{path}: bad type"),
            };
            if !types.iter().any(|t| type_ok(t, v)) {
                errors.push(format!("{path}: {v} is not {}", types.join(" or ")));
                return;
            }
        }
        if let Some(e) = s.get("enum") {
            if !e.as_array().expect("enum list").contains(v) {
                errors.push(format!("{path}: {v} is not one of {e}"));
            }
        }
        if let Some(n) = v.as_f64() {
            if let Some(min) = s.get("minimum").and_then(J::as_f64) {
                if n < min {
                    errors.push(format!("{path}: {n} < minimum {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(J::as_f64) {
                if n > max {
                    errors.push(format!("{path}: {n} > maximum {max}"));
                }
            }
        }
        if let (Some(text), Some(min)) = (v.as_str(), s.get("minLength").and_then(J::as_u64)) {
            if (text.chars().count() as u64) < min {
                errors.push(format!("{path}: {text:?} shorter than {min}"));
            }
        }
        if let Some(items) = v.as_array() {
            if let Some(item_schema) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(item_schema, x, &format!("{path}[{i}]"), errors);
                }
            }
        }
        if let Some(obj) = v.as_object() {
            for r in s.get("required").and_then(J::as_array).into_iter().flatten() {
                let r = r.as_str().expect("required name");
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing {r}"));
                }
            }
            let props = s.get("properties").and_then(J::as_object);
            for (k, x) in obj {
                let sub = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(ps, x, &sub, errors),
                    None => match s.get("additionalProperties") {
                        Some(J::Bool(false)) => errors.push(format!("{sub}: not allowed (unknown key)")),
                        Some(ap @ J::Object(_)) => validate(ap, x, &sub, errors),
                        _ => {}
                    },
                }
            }
        }
    }

    /// The values a schema implies: a node's `default`, or for an object without one,
    /// its properties' defaults. `None` where neither exists.
    pub fn defaults(schema: &J) -> Option<J> {
        if let Some(d) = schema.get("default") {
            return Some(d.clone());
        }
        let props = schema.get("properties")?.as_object()?;
        Some(J::Object(props.iter().filter_map(|(k, s)| defaults(s).map(|d| (k.clone(), d))).collect()))
    }

    /// Every schema node below `path` that is a leaf (no properties) yet has no default.
    pub fn leaves_without_default(schema: &J, path: &str, out: &mut Vec<String>) {
        if schema.get("default").is_some() {
            return;
        }
        match schema.get("properties").and_then(J::as_object) {
            Some(props) => props.iter().for_each(|(k, s)| leaves_without_default(s, &format!("{path}.{k}"), out)),
            None => out.push(path.to_owned()),
        }
    }
}

/// JSON equality with numbers compared as numbers (YAML's `1.0` and JSON's `1.0`, or
/// `8` parsed as an integer by one and a float by the other, are the same value to Helm).
fn same(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (J::Object(x), J::Object(y)) => x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q))),
        _ => a == b,
    }
}

fn differences(a: &J, b: &J, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, &format!("{path}.{k}"), out),
                    (p, q) => out.push(format!("{path}.{k}: values.yaml {p:?}, schema default {q:?}")),
                }
            }
        }
        _ if !same(a, b) => out.push(format!("{path}: values.yaml {a}, schema default {b}")),
        _ => {}
    }
}

fn values_json() -> J {
    serde_norway::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml parses")
}

fn schema_json() -> J {
    serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).expect("values.schema.json parses")
}

// ---------------------------------------------------------------------------------
// The tests

#[test]
fn values_yaml_equals_the_schema_defaults_and_validates_against_it() {
    let (values, schema) = (values_json(), schema_json());
    let mut missing = Vec::new();
    schema::leaves_without_default(&schema, "", &mut missing);
    assert_eq!(missing, vec![".global"], "every schema leaf but `global` has a default");
    let defaults = schema::defaults(&schema).expect("defaults");
    let mut diff = Vec::new();
    differences(&values, &defaults, "", &mut diff);
    assert!(diff.is_empty(), "values.yaml and the schema's defaults differ:\n{}", diff.join("\n"));
    let mut errors = Vec::new();
    schema::validate(&schema, &values, "", &mut errors);
    assert!(errors.is_empty(), "values.yaml against values.schema.json:\n{}", errors.join("\n"));
    // Helm reads values as YAML 1.1, where y/n/yes/no/on/off (keys too) are booleans.
    let mut strings = Vec::new();
    walk_strings(&values, &mut strings);
    for s in strings {
        assert!(!yaml11_trap(s), "values.yaml: {s:?} is a boolean to Helm's YAML 1.1 parser");
    }
}

#[test]
fn the_schema_rejects_typos_wrong_types_and_out_of_range_values() {
    let schema = schema_json();
    let bad = |patch: &str, expect: &str| {
        let mut values = values_json();
        let patch: J = serde_norway::from_str(patch).expect("patch");
        fn merge(a: &mut J, b: &J) {
            match (a, b) {
                (J::Object(x), J::Object(y)) => y.iter().for_each(|(k, v)| merge(x.entry(k.clone()).or_insert(J::Null), v)),
                (a, b) => *a = b.clone(),
            }
        }
        merge(&mut values, &patch);
        let mut errors = Vec::new();
        schema::validate(&schema, &values, "", &mut errors);
        assert!(errors.iter().any(|e| e.contains(expect)), "{patch} should fail with {expect:?}, got {errors:?}");
    };
    bad("config: {dispatch: {shard_sise: 10}}", ".config.dispatch.shard_sise: not allowed");
    bad("config: {database: {url: 'postgres://x'}}", ".config.database.url: not allowed");
    bad("scorer: {kedaa: {enabled: true}}", ".scorer.kedaa: not allowed");
    bad("api: {replicas: two}", ".api.replicas: \"two\" is not integer");
    bad("config: {api: {max_upload_bytes: 1.5}}", "is not integer");
    bad("config: {onnx: {precision: fp16}}", "is not one of");
    bad("scorer: {autoscaling: {targetCPUUtilizationPercentage: 150}}", "> maximum 100");
    bad("api: {containerPort: 0}", "< minimum 1");
    bad("api: {extraEnv: [{value: x}]}", ".api.extraEnv[0]: missing name");
    bad("trainer: {resources: {limit: {}}}", ".trainer.resources.limit: not allowed");
    // A null for a nullable key is fine.
    let mut values = values_json();
    values["config"]["worker"]["artifacts_dir"] = J::String("/data".into());
    values["global"] = serde_json::json!({});
    let mut errors = Vec::new();
    schema::validate(&schema, &values, "", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
}

/// `.Values.a.b` paths in the templates, as written.
fn referenced_value_paths() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in template_files() {
        let src = read(&path);
        for piece in src.split(".Values.").skip(1) {
            let chain: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
            let chain = chain.trim_end_matches('.').to_owned();
            out.entry(chain).or_insert_with(|| path.file_name().expect("name").to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn every_value_the_templates_use_exists_and_every_value_is_used() {
    let values = V::parse_yaml(&read(&chart_dir().join("values.yaml"))).expect("values");
    let refs = referenced_value_paths();
    assert!(refs.len() > 40, "{refs:?}");
    for (path, file) in &refs {
        let mut cur = &values;
        for key in path.split('.') {
            cur = cur.get(key).unwrap_or_else(|| panic!("{file} uses .Values.{path}, which values.yaml lacks (key {key})"));
        }
    }
    // The reverse: every leaf of values.yaml is read by a template (directly, or through
    // an ancestor handed to toYaml/range), so no knob is dead.
    fn leaves(v: &V, prefix: &str, out: &mut Vec<String>) {
        match v {
            V::Map(m) if !m.is_empty() => m.iter().for_each(|(k, x)| leaves(x, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, out)),
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut all = Vec::new();
    leaves(&values, "", &mut all);
    for leaf in all {
        let used = refs.keys().any(|r| leaf == *r || leaf.starts_with(&format!("{r}.")));
        assert!(used, "values.yaml's {leaf} is used by no template");
    }
}

#[test]
fn the_default_render_has_every_role_with_its_required_fields() {
    let r = render_ok("");
    write_render(&r, "default");
    check_common(&r);
    check_pods(&r);
    let full = format!("{RELEASE}-absa");
    let app_version = workspace_version();
    let chart: J = serde_norway::from_str(&read(&chart_dir().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "absa");
    assert_eq!(chart["appVersion"], app_version.as_str(), "Chart appVersion (the default image tag) is the workspace version");
    assert!(chart["version"].as_str().is_some_and(|v| v.split('.').count() == 3), "chart version is SemVer");

    // Exactly these objects; hooks are the migrations' ConfigMap, Secret and Job.
    let mut names = r.names();
    names.sort();
    let expected = [
        "ConfigMap/prod-absa-config",
        "ConfigMap/prod-absa-dashboard",
        "ConfigMap/prod-absa-migrations",
        "Deployment/prod-absa-api",
        "Deployment/prod-absa-scheduler",
        "Deployment/prod-absa-scorer",
        "Deployment/prod-absa-trainer",
        "HorizontalPodAutoscaler/prod-absa-scorer",
        "Job/prod-absa-migrations",
        "Secret/prod-absa-amqp",
        "Secret/prod-absa-database",
        "Secret/prod-absa-migrations",
        "Service/prod-absa-api",
        "ServiceAccount/prod-absa",
    ];
    assert_eq!(names, expected);

    // Images and subcommands per role.
    let image = |role: &str| format!("registry.example.com/absa/absa-{role}:{app_version}");
    for (role, args) in [("api", "serve"), ("scheduler", "run"), ("scorer", "work"), ("trainer", "work")] {
        let d = r.get("Deployment", &format!("{full}-{role}"));
        let c = container(d, role);
        assert_eq!(c["image"], image(role).as_str(), "{role} image");
        assert_eq!(c["args"], serde_json::json!([args]), "{role} subcommand");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        for var in ["ABSA_CONFIG", "ABSA_DATABASE__URL", "ABSA_AMQP__URL"] {
            assert!(env_value(c, var).is_some(), "{role}: no {var}");
        }
        assert_eq!(env_value(c, "ABSA_DATABASE__URL").expect("url")["valueFrom"]["secretKeyRef"]["name"], format!("{full}-database").as_str());
        assert_eq!(env_value(c, "ABSA_AMQP__URL").expect("url")["valueFrom"]["secretKeyRef"]["name"], format!("{full}-amqp").as_str());
        let checksum = d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].as_str().expect("checksum/config");
        let toml_text = r.get("ConfigMap", &format!("{full}-config"))["data"]["absa.toml"].as_str().expect("absa.toml").to_owned();
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(toml_text.trim_end_matches('\n').as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(checksum, digest, "{role}: checksum/config is the ConfigMap's content hash, so pods roll on config changes");
    }

    // Secrets: the URLs from values, base64.
    for (secret, path) in [("database", "database.url"), ("amqp", "amqp.url"), ("migrations", "database.url")] {
        let s = r.get("Secret", &format!("{full}-{secret}"));
        let encoded = s["data"]["url"].as_str().expect("url key");
        assert_eq!(decode_base64(encoded), r.value_str(path), "Secret {secret}");
    }

    // The API: probes on /healthz and /readyz, bound to the container port the Service targets.
    let api = r.get("Deployment", &format!("{full}-api"));
    let c = container(api, "api");
    assert_eq!(api["spec"]["replicas"], 2);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http");
        assert!(c[probe]["periodSeconds"].as_u64().is_some_and(|p| p > 0), "{probe} timings from values");
    }
    let port = r.value_num("api.containerPort") as u64;
    let http = c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == "http").expect("http port");
    assert_eq!(http["containerPort"], port);
    assert_eq!(
        env_value(c, "ABSA_HTTP__BIND").expect("ABSA_HTTP__BIND")["value"],
        format!("0.0.0.0:{port}").as_str(),
        "the API listens where the probes and the Service look"
    );
    let svc = r.get("Service", &format!("{full}-api"));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    let svc_selector = string_map(&svc["spec"]["selector"], "service selector");
    assert!(subset(&svc_selector, &string_map(&api["spec"]["template"]["metadata"]["labels"], "api pod labels")), "the Service selects the API pods");
    for other in ["scheduler", "scorer", "trainer"] {
        let labels = string_map(&r.get("Deployment", &format!("{full}-{other}"))["spec"]["template"]["metadata"]["labels"], "labels");
        assert!(!subset(&svc_selector, &labels), "the API Service also selects {other} pods");
    }
    let uploads = api["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "uploads").expect("uploads volume");
    assert_eq!(uploads["emptyDir"]["sizeLimit"], "4Gi");

    // The scheduler: several replicas, one leads.
    assert_eq!(r.get("Deployment", &format!("{full}-scheduler"))["spec"]["replicas"], 2);

    // The scorer: no fixed replicas (the HPA owns them), CPU requests for utilisation,
    // time to finish a shard on SIGTERM.
    let scorer = r.get("Deployment", &format!("{full}-scorer"));
    assert!(scorer["spec"].get("replicas").is_none(), "an autoscaled Deployment leaves replicas to the autoscaler");
    assert!(container(scorer, "scorer")["resources"]["requests"]["cpu"].is_string(), "HPA utilisation needs a CPU request");
    assert!(pod_spec(scorer)["terminationGracePeriodSeconds"].as_u64().is_some_and(|s| s >= 60));
    let hpa = r.get("HorizontalPodAutoscaler", &format!("{full}-scorer"));
    assert_eq!(hpa["spec"]["scaleTargetRef"], serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{full}-scorer")}));
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["type"], "Utilization");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    assert!(hpa["spec"]["minReplicas"].as_u64() <= hpa["spec"]["maxReplicas"].as_u64());

    // The trainer: a GPU, GPU nodes, one job per pod, time to release the job on SIGTERM.
    let trainer = r.get("Deployment", &format!("{full}-trainer"));
    let tc = container(trainer, "trainer");
    assert!(tc["resources"]["limits"]["nvidia.com/gpu"].as_u64().is_some_and(|g| g >= 1), "trainer limits carry nvidia.com/gpu: {}", tc["resources"]);
    let ts = pod_spec(trainer);
    assert!(ts["nodeSelector"].as_object().is_some_and(|m| !m.is_empty()), "trainer nodeSelector");
    assert!(ts["tolerations"].as_array().expect("tolerations").iter().any(|t| t["key"] == "nvidia.com/gpu"), "trainer tolerates GPU taints");
    let grace = ts["terminationGracePeriodSeconds"].as_f64().expect("grace period");
    assert!(
        grace >= 300.0 && grace > r.value_num("config.worker.lease_secs"),
        "trainer grace period {grace}s: long enough to stop at a step and release the job"
    );
    assert_eq!(trainer["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0, "no surge pods waiting for GPUs");
    assert_eq!(trainer["spec"]["replicas"], 1);
    let models = ts["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "models").expect("models volume");
    assert!(models.get("emptyDir").is_some(), "no claim: an emptyDir");
    assert!(tc["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["name"] == "models" && m["mountPath"] == r.value_str("config.models_dir").as_str()));

    // Migrations: a pre-install,pre-upgrade hook running `absa-api migrate` with the API image,
    // after (lower weight) its own copies of the configuration and the database URL.
    let job = r.get("Job", &format!("{full}-migrations"));
    assert_eq!(hook_events(job), Some("pre-install,pre-upgrade"));
    let jc = container(job, "migrate");
    assert_eq!(jc["args"], serde_json::json!(["migrate"]));
    assert_eq!(jc["image"], image("api").as_str());
    for (kind, name) in [("ConfigMap", format!("{full}-migrations")), ("Secret", format!("{full}-migrations"))] {
        let o = r.get(kind, &name);
        assert_eq!(hook_events(o), Some("pre-install,pre-upgrade"));
        assert!(hook_weight(o) < hook_weight(job), "{kind} {name} exists before the Job runs");
    }
    assert_eq!(
        r.get("ConfigMap", &format!("{full}-migrations"))["data"],
        r.get("ConfigMap", &format!("{full}-config"))["data"],
        "the hook's configuration is the release's"
    );
    assert!(job["spec"]["backoffLimit"].is_u64());

    // Every ABSA_ variable the chart sets is a setting the binaries read.
    let envs: BTreeSet<String> = binary_settings_keys().iter().map(|k| env_name(k)).collect();
    for d in r.all("Deployment").into_iter().chain(r.all("Job")) {
        for c in pod_spec(d)["containers"].as_array().expect("containers") {
            for e in c["env"].as_array().expect("env") {
                let name = e["name"].as_str().expect("name");
                if name.starts_with("ABSA_") && name != "ABSA_CONFIG" {
                    assert!(envs.contains(name), "{name} is not a setting of the binaries ({envs:?})");
                }
            }
        }
    }

    // The notes render and name the things to do next.
    assert!(r.notes.contains("create-key") && r.notes.contains(&format!("svc/{full}-api")), "{}", r.notes);
    assert!(r.notes.contains("WARNING: trainer.models.existingClaim is empty"), "{}", r.notes);
    assert!(r.notes.contains("example credentials"), "{}", r.notes);
}

fn decode_base64(s: &str) -> String {
    const A: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.chars().filter(|c| *c != '=') {
        bits = (bits << 6) | A.find(c).expect("base64 digit") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_config_map_is_the_toml_the_binaries_read() {
    let r = render_ok("");
    let cm = r.get("ConfigMap", &format!("{RELEASE}-absa-config"));
    let text = cm["data"]["absa.toml"].as_str().expect("absa.toml");
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("absa.toml does not parse: {e}\n{text}"));
    // Every section and top-level key the binaries read (http.bind comes from the env,
    // set from api.containerPort), and nothing unknown to them (they ignore unknown keys).
    let keys = binary_settings_keys();
    for key in &keys {
        match key.split_once('.') {
            Some(("http", _)) => {}
            Some((section, _)) => assert!(table.get(section).is_some_and(toml::Value::is_table), "no [{section}] in\n{text}"),
            None => assert!(table.contains_key(key), "no {key} in\n{text}"),
        }
    }
    assert_eq!(table["models_dir"].as_str(), Some("/models"));
    for (k, v) in &table {
        match v {
            toml::Value::Table(t) => {
                for key in t.keys() {
                    assert!(keys.contains(&format!("{k}.{key}")), "{k}.{key} is not a setting of the binaries");
                }
            }
            _ => assert!(keys.contains(k), "{k} is not a setting"),
        }
    }
    assert!(table["database"].get("url").is_none() && table["amqp"].get("url").is_none(), "URLs with passwords come from Secrets, not the ConfigMap");
    assert!(table["worker"].get("artifacts_dir").is_none(), "a null value leaves its key out");
    assert!(table["onnx"].get("intra_threads").is_none());
    // Integers stay integers (Helm's float64 values printed plainly would be 5.36870912e+08).
    assert_eq!(table["api"]["max_upload_bytes"].as_integer(), Some(536_870_912));
    assert_eq!(table["dispatch"]["shard_size"].as_integer(), Some(5000));
    assert_eq!(table["database"]["max_connections"].as_integer(), Some(8));
    assert_eq!(table["torch"]["threads"].as_integer(), Some(0));
    assert_eq!(table["log"]["json"].as_bool(), Some(true));
    assert_eq!(table["onnx"]["precision"].as_str(), Some("fp32"));
    assert_eq!(table["amqp"]["prefix"].as_str(), Some("absa"));

    // Read the file the way the binaries do (absa_platform::config::load, the `config`
    // crate) into the platform's setting types.
    let dir = std::env::temp_dir().join(format!("absa-helm-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("absa.toml");
    std::fs::write(&file, text).expect("write");
    let loaded: J = absa_platform::config::load(Some(&file)).expect("config::load reads the rendered file");
    std::fs::remove_dir_all(&dir).ok();
    let db: absa_platform::config::DatabaseSettings = serde_json::from_value(loaded["database"].clone()).expect("database settings");
    assert_eq!((db.max_connections, db.connect_timeout_secs), (8, 5));
    let amqp: absa_platform::config::AmqpSettings = serde_json::from_value(loaded["amqp"].clone()).expect("amqp settings");
    assert_eq!(amqp.prefix, "absa");
    let log: absa_platform::config::LogSettings = serde_json::from_value(loaded["log"].clone()).expect("log settings");
    assert!(log.json);
    let worker: absa_platform::worker::WorkerSettings = serde_json::from_value(loaded["worker"].clone()).expect("worker settings");
    assert_eq!(worker.work_dir, Path::new("/var/lib/absa/work"));
    assert!(worker.artifacts_dir.is_none());

    // With an artifacts folder and thread count set, they appear (and integers stay integers).
    let r = render_ok("config: {worker: {artifacts_dir: /shared/artifacts}, onnx: {intra_threads: 4}}\npersistence: {artifacts: {existingClaim: rwx}}");
    let text = r.get("ConfigMap", &format!("{RELEASE}-absa-config"))["data"]["absa.toml"].as_str().expect("toml").to_owned();
    let table: toml::Table = text.parse().expect("toml");
    assert_eq!(table["worker"]["artifacts_dir"].as_str(), Some("/shared/artifacts"));
    assert_eq!(table["onnx"]["intra_threads"].as_integer(), Some(4));
}

#[test]
fn everything_enabled_renders_keda_servicemonitor_existing_secrets_and_volumes() {
    let r = render_ok(ALL_ON);
    write_render(&r, "all-on");
    check_common(&r);
    check_pods(&r);
    let mut names = r.names();
    names.sort();
    assert_eq!(
        names,
        [
            "ConfigMap/absa-config",
            "ConfigMap/absa-dashboard",
            "ConfigMap/absa-migrations",
            "Deployment/absa-api",
            "Deployment/absa-scheduler",
            "Deployment/absa-scorer",
            "Deployment/absa-trainer",
            "Job/absa-migrations",
            "ScaledObject/absa-scorer",
            "Service/absa-api",
            "ServiceMonitor/absa-api",
            "TriggerAuthentication/absa-scorer-amqp",
        ],
        "no HPA next to KEDA, no Secrets and no ServiceAccount of our own"
    );
    // KEDA: the scorer Deployment, the <prefix>.score queue, the AMQP URL from the Secret.
    let so = r.get("ScaledObject", "absa-scorer");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "absa-scorer");
    assert_eq!(r.get("Deployment", "absa-scorer")["kind"], "Deployment");
    assert!(r.get("Deployment", "absa-scorer")["spec"].get("replicas").is_none());
    let triggers = so["spec"]["triggers"].as_array().expect("triggers");
    assert_eq!(triggers.len(), 1, "cpuUtilization 0 leaves the CPU trigger out");
    let t = &triggers[0];
    assert_eq!(t["type"], "rabbitmq");
    assert_eq!(t["metadata"]["queueName"], "absa-prod.score");
    assert_eq!(t["metadata"]["mode"], "QueueLength");
    assert_eq!(t["metadata"]["value"], "2", "KEDA trigger metadata values are strings");
    let auth = r.get("TriggerAuthentication", t["authenticationRef"]["name"].as_str().expect("auth ref"));
    assert_eq!(auth["spec"]["secretTargetRef"][0], serde_json::json!({"parameter": "host", "name": "mq-credentials", "key": "uri"}));
    // KEDA's default render has the CPU trigger too.
    let keda_default = render_ok("scorer: {keda: {enabled: true}}");
    let triggers = keda_default.get("ScaledObject", "prod-absa-scorer")["spec"]["triggers"].as_array().expect("triggers").clone();
    assert_eq!(triggers.iter().map(|t| t["type"].as_str().expect("type")).collect::<Vec<_>>(), ["rabbitmq", "cpu"]);
    assert_eq!(triggers[1]["metadata"]["value"], "70");
    assert_eq!(keda_default.get("TriggerAuthentication", "prod-absa-scorer-amqp")["spec"]["secretTargetRef"][0]["name"], "prod-absa-amqp");
    assert!(keda_default.find("HorizontalPodAutoscaler", "prod-absa-scorer").is_none());

    // ServiceMonitor: selects the API Service and its http port, /metrics, extra labels.
    let sm = r.get("ServiceMonitor", "absa-api");
    let svc = r.get("Service", "absa-api");
    assert!(subset(&string_map(&sm["spec"]["selector"]["matchLabels"], "sm selector"), &string_map(&svc["metadata"]["labels"], "svc labels")));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    // The scrape key: the ServiceMonitor's bearer token and the API's ABSA_API__METRICS_KEY.
    let scrape_key = serde_json::json!({"name": "scrape-key", "key": "metrics-key"});
    assert_eq!(sm["spec"]["endpoints"][0]["authorization"], serde_json::json!({"type": "Bearer", "credentials": scrape_key}));
    let api_container = &pod_spec(r.get("Deployment", "absa-api"))["containers"][0];
    assert_eq!(env_value(api_container, "ABSA_API__METRICS_KEY").expect("metrics key")["valueFrom"]["secretKeyRef"], scrape_key);

    // Existing Secrets by name and key; the migrations hook reads the existing one directly.
    for d in r.all("Deployment").into_iter().chain(r.all("Job")) {
        let c = &pod_spec(d)["containers"][0];
        assert_eq!(env_value(c, "ABSA_DATABASE__URL").expect("db")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "pg-credentials", "key": "uri"}));
        if d["kind"] == "Deployment" {
            assert_eq!(env_value(c, "ABSA_AMQP__URL").expect("amqp")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "mq-credentials", "key": "uri"}));
        }
        assert_eq!(pod_spec(d)["serviceAccountName"], "absa-runner");
        assert_eq!(pod_spec(d)["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]));
    }
    // Images: no registry, global tag, the trainer's own tag.
    assert_eq!(container(r.get("Deployment", "absa-api"), "api")["image"], "absa-api:1.2.3");
    assert_eq!(container(r.get("Deployment", "absa-trainer"), "trainer")["image"], "absa-trainer:1.2.3-cuda");
    // Volumes: the artifacts claim on both workers at artifacts_dir, the models claim read-only.
    for role in ["scorer", "trainer"] {
        let d = r.get("Deployment", &format!("absa-{role}"));
        let vol = pod_spec(d)["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "artifacts")
            .unwrap_or_else(|| panic!("{role}: no artifacts volume"));
        assert_eq!(vol["persistentVolumeClaim"]["claimName"], "absa-artifacts");
        let c = container(d, role);
        assert!(c["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["name"] == "artifacts" && m["mountPath"] == "/var/lib/absa/artifacts"));
    }
    let trainer = r.get("Deployment", "absa-trainer");
    let models = pod_spec(trainer)["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "models").expect("models");
    assert_eq!(models["persistentVolumeClaim"], serde_json::json!({"claimName": "base-models", "readOnly": true}));
    // Extra env, node selectors, tolerations, pod annotations pass through.
    let api = r.get("Deployment", "absa-api");
    assert_eq!(env_value(container(api, "api"), "RUST_BACKTRACE").expect("extra env")["value"], "1");
    assert_eq!(pod_spec(api)["nodeSelector"], serde_json::json!({"pool": "web"}));
    assert_eq!(pod_spec(r.get("Deployment", "absa-scorer"))["tolerations"][0]["key"], "spot");
    assert_eq!(api["spec"]["template"]["metadata"]["annotations"]["team"], "nlp");
    let dash = r.get("ConfigMap", "absa-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dash["metadata"]["labels"]["team"], "nlp");
    assert_eq!(dash["metadata"]["annotations"]["grafana_folder"], "ABSA");
    assert!(r.notes.contains("ServiceMonitor absa-api") && r.notes.contains("KEDA on queue absa-prod.score"), "{}", r.notes);
    assert!(!r.notes.contains("WARNING"), "{}", r.notes);

    // Turning things off.
    let r = render_ok("migrations: {enabled: false}\ngrafana: {dashboard: {enabled: false}}\nscorer: {autoscaling: {enabled: false}, replicas: 3}");
    check_common(&r);
    check_pods(&r);
    assert!(r.find("Job", "prod-absa-migrations").is_none() && r.find("ConfigMap", "prod-absa-dashboard").is_none());
    assert!(r.all("HorizontalPodAutoscaler").is_empty());
    assert_eq!(r.get("Deployment", "prod-absa-scorer")["spec"]["replicas"], 3);
}

#[test]
fn a_distributed_run_is_an_indexed_job_whose_pods_meet_at_pod_zero() {
    for (values, message) in [
        ("distributedRun: {enabled: true, sharedClaim: runs}", "distributedRun.args"),
        ("distributedRun: {enabled: true, args: [train]}", "distributedRun.sharedClaim"),
    ] {
        match render(values) {
            Ok(_) => panic!("{values} rendered"),
            Err(e) => assert!(e.contains(message), "{values}: {e}"),
        }
    }
    let r = render_ok(
        "distributedRun: {enabled: true, nodes: 3, ranksPerNode: 2, sharedClaim: runs, args: [train, --base, /shared/models/xlm-roberta-xl, --sharding, full-shard]}",
    );
    write_render(&r, "distributed-run");
    check_common(&r);
    check_pods(&r);
    let job = r.get("Job", "prod-absa-run");
    let svc = r.get("Service", "prod-absa-run");
    assert_eq!(
        (job["spec"]["completionMode"].as_str(), job["spec"]["completions"].as_i64(), job["spec"]["parallelism"].as_i64()),
        (Some("Indexed"), Some(3), Some(3))
    );
    assert_eq!(job["spec"]["backoffLimit"], 0, "a failed rank fails the run");
    // Pod k of an Indexed Job is <job>-k; with the Service as its subdomain it resolves
    // as <job>-k.<service>: node 0 is the rendezvous address every rank is given.
    let spec = pod_spec(job);
    assert_eq!(spec["subdomain"], svc["metadata"]["name"]);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true, "ranks meet before any pod is ready");
    let pod_labels = string_map(&job["spec"]["template"]["metadata"]["labels"], "run pod labels");
    assert!(subset(&string_map(&svc["spec"]["selector"], "run service selector"), &pod_labels));
    let c = container(job, "ranks");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("string args")).collect();
    assert_eq!(
        args,
        [
            "launch",
            "--nnodes",
            "3",
            "--nproc-per-node",
            "2",
            "--node-rank",
            "$(JOB_COMPLETION_INDEX)",
            "--master-addr",
            "prod-absa-run-0.prod-absa-run",
            "--master-port",
            "29500",
            "--",
            "train",
            "--base",
            "/shared/models/xlm-roberta-xl",
            "--sharding",
            "full-shard",
        ]
    );
    assert_eq!(c["ports"][0]["containerPort"], 29500);
    assert_eq!(svc["spec"]["ports"][0]["port"], 29500);
    assert_eq!(c["image"], "registry.example.com/absa/absa-trainer:0.1.0");
    let shared = spec["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "shared").expect("shared volume");
    assert_eq!(shared["persistentVolumeClaim"]["claimName"], "runs");
    assert!(c["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["name"] == "shared" && m["mountPath"] == "/shared"));
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    // Off by default.
    assert!(render_ok("").find("Job", "prod-absa-run").is_none());
}

#[test]
fn missing_urls_and_claims_fail_the_render_with_a_message() {
    for (values, message) in [
        ("database: {url: \"\"}", "database.url is required unless database.existingSecret is set"),
        ("amqp: {url: \"\"}", "amqp.url is required unless amqp.existingSecret is set"),
        ("config: {worker: {artifacts_dir: /a}}", "persistence.artifacts.existingClaim is required"),
        ("config: {api: {upload_dir: null}}", "config.api.upload_dir must be set"),
    ] {
        match render(values) {
            Ok(_) => panic!("{values} rendered"),
            Err(e) => assert!(e.contains(message), "{values}: {e}"),
        }
    }
    // The release name shapes every name; long names are cut to 63 characters.
    let r = render_ok("");
    assert!(r.find("Deployment", "prod-absa-api").is_some());
    let long = render_ok(&format!("fullnameOverride: {}", "x".repeat(70)));
    check_common(&long);
    assert!(long.manifests.iter().all(|m| m.obj["metadata"]["labels"]["app.kubernetes.io/name"] == "absa"));
    assert!(long.find("Job", &format!("{}-migrations", "x".repeat(52))).is_some());
}

#[test]
fn the_grafana_dashboard_charts_the_metrics_the_api_exports() {
    let r = render_ok("");
    let cm = r.get("ConfigMap", &format!("{RELEASE}-absa-dashboard"));
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "the Grafana sidecar finds dashboards by this label");
    let text = cm["data"]["absa.json"].as_str().expect("absa.json");
    assert_eq!(text.trim(), read(&chart_dir().join("dashboards/absa.json")).trim(), "the ConfigMap carries the file unchanged");
    let dash: J = serde_json::from_str(text).expect("dashboard JSON");
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    assert!(dash["templating"]["list"].as_array().expect("templating").iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    let exported = exported_metrics();
    let metrics_src = read(&repo().join("api/src/metrics.rs"));
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel ids are unique");
        assert!(p["gridPos"]["w"].as_u64().is_some_and(|w| w > 0 && w <= 24), "panel width");
        assert_eq!(p["datasource"]["uid"], "${datasource}");
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for e in &exprs {
        assert_eq!(e.matches('(').count(), e.matches(')').count(), "unbalanced PromQL: {e}");
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("absa_")) {
            assert!(exported.contains(word), "{word} in {e:?} is not exported by api/src/metrics.rs ({exported:?})");
        }
    }
    let uses = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    assert!(uses("sum by (state) (max by (kind, state) (absa_jobs))"), "jobs by state");
    assert!(uses("absa_queue_depth"), "queue depth");
    assert!(uses("absa_scoring_instances_per_second"), "scoring throughput");
    for kind in ["lease_expired", "attempt_failed"] {
        assert!(uses(&format!("absa_job_events_total{{kind=\"{kind}\"}}")), "{kind} events");
        assert!(metrics_src.contains(&format!("'{kind}'")), "metrics.rs counts {kind}");
    }
    assert!(uses("rate(absa_api_requests_total["), "API request rate");
    // Gauges read from Postgres are the same on every API replica: never summed raw.
    for e in &exprs {
        for gauge in ["absa_jobs", "absa_queue_depth", "absa_scoring_instances_per_second", "absa_predictions_rows"] {
            if e.contains(&format!("{gauge})")) || e.contains(&format!("{gauge}{{")) {
                assert!(e.contains("max"), "{e}: {gauge} is reported by every replica; take max() over them");
            }
        }
    }
}

#[test]
fn the_dockerfiles_build_each_role_with_the_native_libraries_of_scripts_native_sh() {
    let docker = repo().join("docker");
    let cargo: toml::Table = read(&repo().join("Cargo.toml")).parse().expect("Cargo.toml");
    let members: Vec<String> = cargo["workspace"]["members"].as_array().expect("members").iter().map(|m| m.as_str().expect("member").to_owned()).collect();
    let values = V::parse_yaml(&read(&chart_dir().join("values.yaml"))).expect("values");
    let uid = match values.get("podSecurityContext").and_then(|p| p.get("runAsUser")) {
        Some(V::Float(f)) => *f as u64,
        other => panic!("runAsUser {other:?}"),
    };
    for (role, cmd) in [("api", "serve"), ("scheduler", "run"), ("scorer", "work"), ("trainer", "work")] {
        let file = docker.join(format!("{role}.Dockerfile"));
        let text = read(&file);
        let bin = format!("absa-{role}");
        assert!(text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2, "{role}: multi-stage build");
        assert!(text.contains(&format!("cargo build --release --locked -p {bin} --bin {bin}")), "{role}: builds {bin}");
        // The workspace resolves only with every member's manifest (and the embedded migrations).
        for dir in members.iter().map(String::as_str).chain(["migrations"]) {
            assert!(text.contains(&format!("COPY {dir} {dir}")), "{role}: the workspace member {dir} is not copied into the build");
        }
        assert!(text.contains(&format!("ENTRYPOINT [\"{bin}\"]")), "{role}: entrypoint");
        assert!(text.contains(&format!("CMD [\"{cmd}\"]")), "{role}: default subcommand");
        assert!(text.contains(&format!("USER {uid}")), "{role}: runs as the chart's runAsUser {uid}");
        let repo_value = values.get(role).and_then(|r| r.get("image")).and_then(|i| i.get("repository"));
        assert_eq!(repo_value, Some(&V::Str(bin.clone())), "{role}: values' image repository is the binary's name");
    }
    let scorer = read(&docker.join("scorer.Dockerfile"));
    let ort = native_version("ORT_VERSION");
    assert!(scorer.contains(&format!("ARG ORT_VERSION={ort}")), "scorer: ONNX Runtime {ort} as in scripts/native.sh");
    assert!(scorer.contains("onnxruntime==${ORT_VERSION}") && scorer.contains("ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.${ORT_VERSION}"));
    let trainer = read(&docker.join("trainer.Dockerfile"));
    let torch = native_version("TORCH_VERSION");
    assert!(trainer.contains(&format!("ARG TORCH_VERSION={torch}")), "trainer: torch {torch} as in scripts/native.sh (tch expects exactly it)");
    assert!(trainer.contains("torch==${TORCH_VERSION}"));
    assert!(trainer.contains("ENV LIBTORCH=/opt/libtorch"), "trainer: LIBTORCH set at build time");
    assert!(trainer.lines().any(|l| l.starts_with("ARG CUDA_IMAGE=nvidia/cuda:") && l.contains("runtime")), "trainer: runs on an nvidia/cuda runtime image");
    for f in ["api", "scheduler"] {
        assert!(read(&docker.join(format!("{f}.Dockerfile"))).contains("debian:bookworm-slim"), "{f}: slim Debian runtime");
    }
}

#[test]
fn the_renderer_follows_go_template_and_helm_semantics() {
    let run = |src: &str, values: &str| -> Result<String, String> {
        let mut e = gotmpl::Engine::new(chart_dir());
        let nodes = e.parse(src)?;
        e.execute(&nodes, &V::map(vec![("Values", V::parse_yaml(values)?)]))
    };
    let ok = |src: &str, values: &str| run(src, values).unwrap_or_else(|e| panic!("{src}: {e}"));
    // Trim markers eat all adjacent whitespace, newlines included.
    assert_eq!(ok("a  \n {{- \"b\" -}} \n  c", "{}"), "abc");
    assert_eq!(ok("a {{ \"b\" }} c", "{}"), "a b c");
    assert_eq!(ok("x{{/* comment */}}y{{- /* c */ -}} z", "{}"), "xyz");
    // Numbers from values are float64: large ones print in exponent form, as in Helm.
    // (Checked against text/template with Sprig 3.2.3 and ghodss/yaml; keys such as `y`
    // or `n` are avoided: Helm's YAML 1.1 parser reads them as booleans.)
    assert_eq!(
        ok("{{ .Values.big }} {{ .Values.m }} {{ .Values.f }} {{ .Values.small }}", "{big: 536870912, m: 8080, f: 1.5, small: 0.00001}"),
        "5.36870912e+08 8080 1.5 1e-05"
    );
    assert_eq!(ok("{{ toJson .Values.big }}", "big: 536870912"), "536870912");
    assert_eq!(ok("{{ printf \"%d\" .Values.m }}", "m: 8080"), "%!d(float64=8080)");
    assert_eq!(ok("{{ .Values.x | quote }} {{ quote 5 }}", "x: 'a\"b'"), "\"a\\\"b\" \"5\"");
    assert_eq!(ok("{{ default \"d\" .Values.e }}/{{ default \"d\" .Values.z }}/{{ .Values.m | default 1 }}", "{e: '', z: 0, m: 3}"), "d/d/3");
    assert!(run("{{ eq .Values.m 1 }}", "m: 1").unwrap_err().contains("incompatible types"));
    assert!(run("{{ .Values.a.b }}", "{}").unwrap_err().contains("nil pointer"));
    assert!(run("{{ nope 1 }}", "{}").unwrap_err().contains("not defined"));
    assert!(run("{{ required \"need x\" .Values.x }}", "{}").unwrap_err().contains("need x"));
    // Control flow, variables, ranges over sorted map keys, include with dict.
    assert_eq!(ok("{{ if .Values.a }}A{{ else if .Values.b }}B{{ else }}C{{ end }}", "{a: false, b: true}"), "B");
    assert_eq!(ok("{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}", "m: {b: 2, a: x}"), "a=x;b=2;");
    assert_eq!(ok("{{ range .Values.l }}[{{ . }}]{{ else }}none{{ end }}", "l: []"), "none");
    assert_eq!(ok("{{ $x := \"a\" }}{{ if true }}{{ $x = \"b\" }}{{ end }}{{ $x }}", "{}"), "b");
    assert_eq!(ok("{{ with .Values.w }}{{ .k }}{{ end }}", "w: {k: v}"), "v");
    assert_eq!(ok("{{ define \"t\" }}<{{ .a }}>{{ end }}{{ include \"t\" (dict \"a\" 1) | nindent 2 }}", "{}"), "\n  <1>");
    assert_eq!(ok("{{ and 1 0 }} {{ or 0 \"\" \"x\" }} {{ not .Values.nn }}", "nn: null"), "0 x true");
    assert_eq!(ok("{{ kindIs \"map\" .Values.m }} {{ kindIs \"invalid\" .Values.nn }}", "{m: {}, nn: null}"), "true true");
    assert_eq!(ok("{{ \"abcdef-\" | trunc 7 | trimSuffix \"-\" }}", "{}"), "abcdef");
    assert_eq!(ok("{{ b64enc \"postgres://a:b@h/d\" }}", "{}"), "cG9zdGdyZXM6Ly9hOmJAaC9k");
    // toYaml: sorted keys, sequences at the key's indentation, quoting what YAML would misread.
    assert_eq!(
        ok("{{ toYaml .Values }}", "{b: [{x: 1, z: 'on'}, 2], a: {c: '8080', d: 2Gi, e: {}, f: '1e3'}, 'nvidia.com/gpu': 1}"),
        "a:\n  c: \"8080\"\n  d: 2Gi\n  e: {}\n  f: \"1e3\"\nb:\n- x: 1\n  z: \"on\"\n- 2\nnvidia.com/gpu: 1"
    );
    // Helm's value coalescing: null deletes a key.
    let mut base = V::parse_yaml("{a: {b: 1, c: 2}}").expect("yaml");
    gotmpl::merge(&mut base, &V::parse_yaml("{a: {c: null, d: 3}}").expect("yaml"));
    assert_eq!(base, V::parse_yaml("{a: {b: 1, d: 3}}").expect("yaml"));
    assert_eq!(gotmpl::go_float(1e6), "1e+06");
    assert_eq!(gotmpl::go_float(0.00001), "1e-05");
    assert_eq!(gotmpl::go_float(123456.0), "123456");
}
