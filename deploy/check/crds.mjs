// Validate the non-core objects of rendered manifests against real CRD schemas.
//
//   node crds.mjs RENDERED.yaml...
//
// Every object whose API group is not Kubernetes' own (a group with a dot that
// does not end in .k8s.io) must have a model here; core objects are left to
// kubernetes-validate. Two checks per object:
//  1. the model's validate(): the JSON schema generated from the Prometheus
//     Operator's CRDs (types, required fields, enums, duration patterns);
//  2. unknown fields: CRD schemas do not forbid extra properties (the API
//     server prunes them silently), so the objects are also type-checked as
//     TypeScript object literals against the models' interfaces, where an
//     unknown or misspelt field is an error.
// `node crds.mjs --self-test` feeds in broken objects and expects each refused.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

function isCore(apiVersion) {
  const group = apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
  return !group.includes(".") || group.endsWith(".k8s.io");
}

function label(obj) {
  return `${obj.kind}/${obj.metadata?.namespace ? obj.metadata.namespace + "/" : ""}${obj.metadata?.name}`;
}

async function modelFor(obj) {
  const group = obj.apiVersion.split("/")[0];
  const pkg = PACKAGES[group];
  if (!pkg) return { error: `no CRD model for API group ${group}: add its @kubernetes-models package` };
  let mod;
  try {
    mod = await import(`${pkg}/${obj.apiVersion}`);
  } catch {
    return { error: `${pkg} has no ${obj.apiVersion}` };
  }
  const Model = mod[obj.kind];
  if (typeof Model !== "function") return { error: `${pkg} has no kind ${obj.kind} in ${obj.apiVersion}` };
  return { Model, typeModule: `${pkg}/${obj.apiVersion}/${obj.kind}`, typeName: `I${obj.kind}` };
}

// Type-check every object as a literal of its model's interface, in memory.
function typeCheck(entries) {
  const file = path.join(HERE, "__rendered_objects__.ts");
  const lines = [];
  const owner = [];
  entries.forEach((e, i) => {
    lines.push(`import type { ${e.typeName} as T${i} } from "${e.typeModule}";`);
    owner.push(null);
  });
  entries.forEach((e, i) => {
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(e.obj)};`);
    owner.push(e);
  });
  const source = lines.join("\n") + "\n";
  const options = {
    strict: true, noEmit: true, skipLibCheck: true, types: [],
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language) : getSourceFile(name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const errors = new Map();
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    const line = d.file && d.file.fileName === file ? d.file.getLineAndCharacterOfPosition(d.start).line : -1;
    const e = owner[line] ?? null;
    const key = e ? e.where : "(type check)";
    if (!errors.has(key)) errors.set(key, []);
    errors.get(key).push(text);
  }
  return errors;
}

export async function check(objects) {
  const failures = [];
  const entries = [];
  for (const { obj, where } of objects) {
    const found = await modelFor(obj);
    if (found.error) {
      failures.push(`${where}: ${found.error}`);
      continue;
    }
    try {
      new found.Model(obj).validate();
    } catch (err) {
      failures.push(`${where}: schema: ${err.message}`);
    }
    entries.push({ ...found, obj, where });
  }
  if (entries.length) {
    for (const [where, texts] of typeCheck(entries)) {
      for (const t of texts) failures.push(`${where}: unknown or mistyped field: ${t}`);
    }
  }
  return { failures, checked: entries.length };
}

function readObjects(file) {
  const out = [];
  for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))) {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj && obj.apiVersion && !isCore(obj.apiVersion)) out.push({ obj, where: `${path.basename(file)} ${label(obj)}` });
  }
  return out;
}

async function selfTest(files) {
  // One run of check() over the clean objects and every broken copy, so the
  // TypeScript program is built once.
  const objects = files.flatMap(readObjects);
  const first = (kind) => objects.find((o) => o.obj.kind === kind);
  const breaks = [
    ["ServiceMonitor interval not a duration", "ServiceMonitor", (o) => { o.spec.endpoints[0].interval = "15 seconds"; }],
    ["ServiceMonitor misspelt field", "ServiceMonitor", (o) => { o.spec.endpoints[0].intervall = "15s"; }],
    ["ServiceMonitor endpoints not a list", "ServiceMonitor", (o) => { o.spec.endpoints = "metrics"; }],
    ["PrometheusRule `for` not a duration", "PrometheusRule", (o) => { o.spec.groups.at(-1).rules[0].for = "5 min"; }],
    ["PrometheusRule rule without expr", "PrometheusRule", (o) => { delete o.spec.groups[0].rules[0].expr; }],
    ["PrometheusRule misspelt field", "PrometheusRule", (o) => { o.spec.groups[0].rules[0].annotation = {}; }],
    ["unknown CRD kind", "ServiceMonitor", (o) => { o.kind = "ServiceMonitors"; }],
  ];
  const broken = [];
  let missed = 0;
  for (const [what, kind, mutate] of breaks) {
    const target = first(kind);
    if (!target) {
      console.log(`crds self-test MISSED  ${what}: no ${kind} in the renders`);
      missed++;
      continue;
    }
    const obj = structuredClone(target.obj);
    mutate(obj);
    broken.push({ obj, where: `${target.where} [${what}]`, what });
  }
  const { failures } = await check([...objects, ...broken]);
  const about = (where) => failures.filter((f) => f.startsWith(`${where}: `));
  const unclean = objects.flatMap((o) => about(o.where));
  if (unclean.length) {
    console.log("crds self-test: the renders are not clean to start with:", ...unclean);
    return 1;
  }
  for (const { where, what } of broken) {
    const found = about(where);
    if (found.length) console.log(`crds self-test caught  ${what}: ${found[0].split("\n")[0]}`);
    else { console.log(`crds self-test MISSED  ${what}`); missed++; }
  }
  console.log(`crds self-test: ${breaks.length - missed} of ${breaks.length} breaks caught`);
  return missed ? 1 : 0;
}

async function main(argv) {
  const selfTesting = argv[0] === "--self-test";
  const files = selfTesting ? argv.slice(1) : argv;
  if (!files.length) {
    console.error("usage: node crds.mjs [--self-test] RENDERED.yaml...");
    return 2;
  }
  if (selfTesting) return selfTest(files);
  let status = 0;
  for (const file of files) {
    const objects = readObjects(file);
    const { failures, checked } = await check(objects);
    if (failures.length) {
      status = 1;
      console.log(`crds FAIL ${file}:`);
      for (const f of failures) console.log(`  ${f}`);
    } else {
      const kinds = [...new Set(objects.map((o) => o.obj.kind))].join(", ") || "none";
      console.log(`crds ok   ${file}: ${checked} non-core object(s) (${kinds}) valid against the CRD schemas, no unknown field`);
    }
  }
  return status;
}

process.exitCode = await main(process.argv.slice(2));
