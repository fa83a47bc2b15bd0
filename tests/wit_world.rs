//! The component world `wit/sluice.wit` is a contract with every component written for
//! Sluice: it parses, and its `handler` world exports `handle(event, context) ->
//! result<string, error>` with the fields and error kinds `docs/functions.md` documents.
//! A renamed or dropped field breaks components built against it; this test fails first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use wit_parser::{Resolve, Type, TypeDefKind, WorldItem};

/// The type `ty` names, through `use` aliases.
fn definition<'a>(resolve: &'a Resolve, ty: &Type) -> &'a TypeDefKind {
    let Type::Id(id) = ty else { panic!("not a named type: {ty:?}") };
    match &resolve.types[*id].kind {
        TypeDefKind::Type(inner) => definition(resolve, inner),
        kind => kind,
    }
}

/// A record's fields or an enum's cases, in order.
fn field_names(resolve: &Resolve, ty: &Type) -> Vec<String> {
    match definition(resolve, ty) {
        TypeDefKind::Record(record) => record.fields.iter().map(|f| f.name.clone()).collect(),
        TypeDefKind::Enum(kinds) => kinds.cases.iter().map(|c| c.name.clone()).collect(),
        other => panic!("not a record or enum: {other:?}"),
    }
}

#[test]
fn the_handler_world_is_the_documented_contract() {
    let mut resolve = Resolve::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wit/sluice.wit");
    let package = resolve.push_file(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    assert_eq!(resolve.packages[package].name.to_string(), "sluice:function@0.1.0");
    let world = resolve.select_world(&[package], Some("handler")).unwrap();

    let exports: Vec<_> = resolve.worlds[world].exports.values().collect();
    assert_eq!(exports.len(), 1, "the world exports one function");
    let WorldItem::Function(handle) = exports[0] else { panic!("the export is not a function") };
    assert_eq!(handle.name, "handle");
    let params: Vec<&str> = handle.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(params, ["event", "context"]);
    assert_eq!(handle.params[0].ty, Type::String);
    assert_eq!(
        field_names(&resolve, &handle.params[1].ty),
        [
            "request-id",
            "function-name",
            "invoked-function-arn",
            "memory-limit-mb",
            "deadline-ms",
            "attempt",
            "event-id",
            "event-type",
            "event-source",
            "event-time",
            "event-subject",
            "traceparent"
        ]
    );

    let result = handle.result.expect("handle returns a value");
    let TypeDefKind::Result(result) = definition(&resolve, &result) else { panic!("handle does not return a result") };
    assert_eq!(result.ok, Some(Type::String), "the response is JSON text");
    let error = result.err.expect("an error type");
    assert_eq!(field_names(&resolve, &error), ["kind", "error-type", "message", "stack-trace"]);
    let TypeDefKind::Record(record) = definition(&resolve, &error) else { panic!("the error is not a record") };
    assert_eq!(field_names(&resolve, &record.fields[0].ty), ["handler", "memory", "invalid-response"]);
    let TypeDefKind::List(line) = definition(&resolve, &record.fields[3].ty) else { panic!("stack-trace is not a list") };
    assert_eq!(*line, Type::String, "stack-trace is a list of lines");
}
