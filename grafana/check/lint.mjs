#!/usr/bin/env node
// Lints grafana/dashboards/downbeat.json, in the spirit of Grafana's
// dashboard-linter, plus this board's own conventions. Plain Node (>= 18), no
// dependencies.
//
//   node lint.mjs [dashboard.json] [--no-self-test]
//
// Before linting the file, a self-test lints mutated in-memory copies of it
// (a panel without datasource, a hard-coded uid, a rate over [5m], ...) and
// checks that each mutation is reported, so a green run also shows the lint
// can fail. Exit status: 0 clean, 1 problems found or self-test failed.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const grafanaDir = join(here, '..');

// ------------------------------------------------------------------ settings
const DATASOURCE_REF = { type: 'prometheus', uid: '${datasource}' };
const EXPECTED = { uid: 'downbeat', refresh: '5s', style: 'dark', from: 'now-1h', to: 'now', minSchemaVersion: 36 };
const NO_UNIT_TYPES = new Set(['row', 'text', 'news', 'dashlist', 'annolist', 'alertlist']);
const RATE_INTERVAL = new Set(['[$__rate_interval]', '[${__rate_interval}]']);
/** Filter variables and the selectors they must appear in (`label=~"$var"`). */
const FILTERS = [
  { variable: 'replica', label: 'instance', applies: (metric) => metric.startsWith('downbeat_') },
  { variable: 'level', label: 'level', applies: (metric) => metric === 'downbeat_streams_by_level_total' },
  { variable: 'state', label: 'state', applies: (metric) => metric === 'downbeat_streams_by_state_total' },
];
/** Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) this board may use. */
const UNITS = new Set([
  'none', 'string', 'short', 'percent', 'percentunit', 'locale', 'sci', 'hex', 'hex0x', 'dB', 'humidity', 'pixel',
  'bits', 'bytes', 'kbytes', 'mbytes', 'gbytes', 'tbytes', 'pbytes',
  'decbits', 'decbytes', 'deckbytes', 'decmbytes', 'decgbytes', 'dectbytes', 'decpbytes',
  'pps', 'bps', 'Bps', 'KBs', 'Kbits', 'MBs', 'Mbits', 'GBs', 'Gbits', 'TBs', 'Tbits', 'PBs', 'Pbits',
  'dateTimeAsIso', 'dateTimeAsIsoNoDateIfToday', 'dateTimeAsUS', 'dateTimeAsUSNoDateIfToday', 'dateTimeFromNow',
  'hertz', 'ns', 'µs', 'ms', 's', 'm', 'h', 'd', 'dtdurationms', 'dtdurations', 'dthms', 'dtdhms', 'timeticks', 'clockms', 'clocks',
  'cps', 'ops', 'reqps', 'rps', 'wps', 'iops', 'cpm', 'opm', 'rpm', 'wpm', 'bool', 'bool_yes_no', 'bool_on_off',
]);
/** Custom units Grafana formats from their prefix (valueFormats.ts getValueFormat). */
const UNIT_PREFIXES = ['prefix:', 'suffix:', 'si:', 'count:', 'currency:', 'time:', 'bool:'];

// ------------------------------------------------------------------ helpers
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const sameRef = (ref) => isObject(ref) && ref.type === DATASOURCE_REF.type && ref.uid === DATASOURCE_REF.uid && Object.keys(ref).length === 2;

/** Every panel, rows' nested (collapsed) panels included. */
function allPanels(dashboard) {
  const out = [];
  for (const panel of dashboard.panels ?? []) {
    out.push(panel);
    for (const nested of panel.panels ?? []) out.push(nested);
  }
  return out;
}

/** Every value in a JSON tree with its path. */
function* walk(value, path = '$') {
  yield [path, value];
  if (Array.isArray(value)) for (let i = 0; i < value.length; i++) yield* walk(value[i], `${path}[${i}]`);
  else if (isObject(value)) for (const [k, v] of Object.entries(value)) yield* walk(v, `${path}.${k}`);
}

/**
 * A PromQL expression with the inside of every string literal blanked to
 * spaces (same length, same positions), so scans of the code never look into
 * label values; `closed` tells whether every quote was closed.
 */
function blankStrings(expr) {
  let code = '';
  let quote = null;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (quote) {
      if (c === '\\' && quote !== '`' && i + 1 < expr.length) {
        code += '  ';
        i++;
      } else if (c === quote) {
        quote = null;
        code += c;
      } else code += ' ';
      continue;
    }
    if (c === '"' || c === "'" || c === '`') quote = c;
    code += c;
  }
  return { code, closed: quote === null };
}

/** The argument text of every rate( and irate( call, string literals blanked. */
function rateCalls(expr) {
  const code = blankStrings(expr).code;
  const calls = [];
  const re = /(?<![A-Za-z0-9_:])(irate|rate)\s*\(/g;
  let m;
  while ((m = re.exec(code))) {
    let depth = 0;
    let i = m.index + m[0].length - 1;
    for (; i < code.length; i++) {
      if (code[i] === '(') depth++;
      else if (code[i] === ')' && --depth === 0) break;
    }
    calls.push({ fn: m[1], args: code.slice(m.index + m[0].length, i) });
  }
  return calls;
}

/** Every selector of a metric name: { metric, matchers } (matchers text without braces, '' if none). */
function selectors(expr) {
  const out = [];
  const re = /(?<![A-Za-z0-9_:])(downbeat_[A-Za-z0-9_]*)\s*(\{)?/g;
  const blanked = blankStrings(expr).code;
  let m;
  while ((m = re.exec(blanked))) {
    let matchers = '';
    if (m[2]) {
      const start = m.index + m[0].length;
      const end = blanked.indexOf('}', start);
      matchers = expr.slice(start, end === -1 ? expr.length : end);
    }
    out.push({ metric: m[1], matchers });
  }
  return out;
}

function balanced(code) {
  const pairs = { ')': '(', ']': '[', '}': '{' };
  const stack = [];
  for (const c of code) {
    if ('([{'.includes(c)) stack.push(c);
    else if (c in pairs && stack.pop() !== pairs[c]) return false;
  }
  return stack.length === 0;
}

function readProvisionedUid() {
  try {
    const yaml = readFileSync(join(grafanaDir, 'provisioning', 'datasources', 'downbeat.yaml'), 'utf8');
    const m = yaml.match(/^\s*uid:\s*["']?([^"'\s#]+)/m);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ rules
/** Each rule: (dashboard, report) where report(message) records a problem. */
const RULES = {
  'dashboard-settings'(d, report) {
    if (d.uid !== EXPECTED.uid) report(`uid is ${JSON.stringify(d.uid)}, expected "${EXPECTED.uid}" (links and provisioning rely on it)`);
    if (d.refresh !== EXPECTED.refresh) report(`refresh is ${JSON.stringify(d.refresh)}, expected "${EXPECTED.refresh}"`);
    if (d.style !== EXPECTED.style) report(`style is ${JSON.stringify(d.style)}, expected "${EXPECTED.style}"`);
    if (d.time?.from !== EXPECTED.from || d.time?.to !== EXPECTED.to)
      report(`time is ${JSON.stringify(d.time)}, expected {"from":"${EXPECTED.from}","to":"${EXPECTED.to}"}`);
    if (!(d.schemaVersion >= EXPECTED.minSchemaVersion)) report(`schemaVersion ${d.schemaVersion} is older than ${EXPECTED.minSchemaVersion}`);
    if (!d.title) report('the dashboard has no title');
  },

  'datasource-variable'(d, report) {
    const list = d.templating?.list ?? [];
    const v = list.find((x) => x.name === 'datasource');
    if (!v) return report('no template variable named "datasource"');
    if (v.type !== 'datasource') report(`variable "datasource" has type ${JSON.stringify(v.type)}, expected "datasource"`);
    if (v.query !== 'prometheus') report(`variable "datasource" has query ${JSON.stringify(v.query)}, expected "prometheus"`);
    for (const x of list) {
      if (x.type === 'query' && !sameRef(x.datasource))
        report(`variable "${x.name}" does not query through {"type":"prometheus","uid":"\${datasource}"}`);
    }
  },

  'filter-variables'(d, report) {
    const list = d.templating?.list ?? [];
    for (const { variable } of FILTERS) {
      const v = list.find((x) => x.name === variable);
      if (!v) {
        report(`no template variable "${variable}"`);
        continue;
      }
      if (v.type !== 'query') report(`variable "${variable}" should be a query variable`);
      if (!v.multi || !v.includeAll) report(`variable "${variable}" should allow several values and All (multi, includeAll)`);
      if (v.includeAll && v.allValue !== '.*') report(`variable "${variable}" should use allValue ".*" (regex matchers)`);
      if (v.refresh !== 2) report(`variable "${variable}" should refresh on time range change (refresh: 2)`);
    }
  },

  'panel-datasource'(d, report) {
    for (const p of allPanels(d)) {
      const where = `panel ${p.id} "${p.title ?? ''}"`;
      if (p.type === 'row') {
        if (p.datasource !== undefined && p.datasource !== null && !sameRef(p.datasource)) report(`${where}: row datasource must be the \${datasource} variable`);
        continue;
      }
      if (p.type === 'text') continue;
      if (!sameRef(p.datasource)) report(`${where}: datasource is ${JSON.stringify(p.datasource)}, expected {"type":"prometheus","uid":"\${datasource}"}`);
      if (!Array.isArray(p.targets) || p.targets.length === 0) {
        report(`${where}: has no targets`);
        continue;
      }
      for (const t of p.targets) {
        if (!sameRef(t.datasource)) report(`${where} target ${t.refId}: datasource is ${JSON.stringify(t.datasource)}, expected the \${datasource} variable`);
      }
    }
  },

  'no-hardcoded-uid'(d, report) {
    for (const [path, value] of walk(d)) {
      if (!isObject(value)) continue;
      if (typeof value.datasource === 'string') report(`${path}.datasource is a plain name ${JSON.stringify(value.datasource)}; use {"type":"prometheus","uid":"\${datasource}"}`);
      if ('uid' in value && path !== '$' && value.uid !== '${datasource}')
        report(`${path}.uid is ${JSON.stringify(value.uid)}: only the \${datasource} variable may be referenced`);
    }
    const provisioned = readProvisionedUid();
    if (provisioned && JSON.stringify(d).includes(provisioned))
      report(`the provisioned data source uid "${provisioned}" appears in the dashboard; reference \${datasource} instead`);
  },

  'panel-title-description'(d, report) {
    for (const p of allPanels(d)) {
      if (typeof p.title !== 'string' || p.title.trim() === '') report(`panel ${p.id} (${p.type}) has no title`);
      else if (p.type !== 'row' && (typeof p.description !== 'string' || p.description.trim().length < 20))
        report(`panel ${p.id} "${p.title}" has no description a viewer could use`);
    }
  },

  'panel-units'(d, report) {
    for (const p of allPanels(d)) {
      if (NO_UNIT_TYPES.has(p.type)) continue;
      const unit = p.fieldConfig?.defaults?.unit;
      const where = `panel ${p.id} "${p.title ?? ''}"`;
      if (typeof unit !== 'string' || unit === '') report(`${where}: no unit (fieldConfig.defaults.unit)`);
      else if (!UNITS.has(unit) && !UNIT_PREFIXES.some((prefix) => unit.startsWith(prefix) && unit.length > prefix.length))
        report(`${where}: unknown unit ${JSON.stringify(unit)} (a Grafana unit id, or a custom unit such as "suffix:x")`);
    }
  },

  'target-expr'(d, report) {
    for (const p of allPanels(d)) {
      const refIds = new Set();
      for (const t of p.targets ?? []) {
        const where = `panel ${p.id} "${p.title ?? ''}" target ${t.refId}`;
        if (typeof t.refId !== 'string' || t.refId === '') report(`panel ${p.id}: a target has no refId`);
        else if (refIds.has(t.refId)) report(`${where}: duplicate refId`);
        refIds.add(t.refId);
        if (typeof t.expr !== 'string' || t.expr.trim() === '') {
          report(`${where}: no PromQL expr`);
          continue;
        }
        const { code, closed } = blankStrings(t.expr);
        if (!closed || !balanced(code)) report(`${where}: unbalanced quotes or brackets in ${JSON.stringify(t.expr)}`);
      }
    }
  },

  'rate-interval'(d, report) {
    for (const p of allPanels(d)) {
      for (const t of p.targets ?? []) {
        if (typeof t.expr !== 'string') continue;
        for (const call of rateCalls(t.expr)) {
          const ranges = call.args.match(/\[[^\]]*\]/g) ?? [];
          const bad = ranges.length === 0 ? ['(none)'] : ranges.filter((r) => !RATE_INTERVAL.has(r.replace(/\s+/g, '')));
          if (bad.length) report(`panel ${p.id} "${p.title ?? ''}" target ${t.refId}: ${call.fn}() over ${bad.join(', ')}; use [$__rate_interval]`);
        }
      }
    }
  },

  'template-filters'(d, report) {
    for (const p of allPanels(d)) {
      for (const t of p.targets ?? []) {
        if (typeof t.expr !== 'string') continue;
        for (const { metric, matchers } of selectors(t.expr)) {
          // The merge tier's series (job downbeat-merge) are global: no
          // replica to filter by.
          if (matchers.replace(/\s+/g, '').includes('job="downbeat-merge"')) continue;
          if (metric === 'downbeat_merge_source_partitions') continue;
          for (const f of FILTERS) {
            if (!f.applies(metric)) continue;
            const want = `${f.label}=~"$${f.variable}"`;
            if (!matchers.replace(/\s+/g, '').includes(want))
              report(`panel ${p.id} "${p.title ?? ''}" target ${t.refId}: ${metric} without ${want}`);
          }
        }
      }
    }
  },

  'unique-ids'(d, report) {
    const seen = new Map();
    for (const p of allPanels(d)) {
      if (!Number.isInteger(p.id) || p.id <= 0) report(`panel "${p.title ?? ''}" has id ${JSON.stringify(p.id)}, expected a positive integer`);
      else if (seen.has(p.id)) report(`panel id ${p.id} is used by "${seen.get(p.id)}" and "${p.title ?? ''}"`);
      else seen.set(p.id, p.title ?? '');
    }
  },

  'grid-layout'(d, report) {
    const boxes = [];
    for (const p of d.panels ?? []) {
      const g = p.gridPos;
      const where = `panel ${p.id} "${p.title ?? ''}"`;
      if (!isObject(g) || !['h', 'w', 'x', 'y'].every((k) => Number.isInteger(g[k]) && g[k] >= 0)) {
        report(`${where}: gridPos must have non-negative integer h, w, x, y`);
        continue;
      }
      if (g.w < 1 || g.h < 1 || g.x + g.w > 24) report(`${where}: gridPos ${JSON.stringify(g)} does not fit the 24-column grid`);
      for (const [other, o] of boxes) {
        if (g.x < o.x + o.w && o.x < g.x + g.w && g.y < o.y + o.h && o.y < g.y + g.h) report(`${where} overlaps panel ${other.id} "${other.title ?? ''}"`);
      }
      boxes.push([p, g]);
    }
  },

  provisioning(d, report) {
    const read = (rel) => {
      try {
        return readFileSync(join(grafanaDir, rel), 'utf8');
      } catch {
        report(`cannot read grafana/${rel}`);
        return '';
      }
    };
    const value = (yaml, key) => yaml.match(new RegExp(`^\\s*-?\\s*${key}:\\s*["']?([^"'#\\n]*?)["']?\\s*(#.*)?$`, 'm'))?.[1];
    const ds = read('provisioning/datasources/downbeat.yaml');
    if (ds) {
      if (value(ds, 'type') !== 'prometheus') report('provisioning/datasources/downbeat.yaml: the data source is not of type prometheus');
      if (!/^\$\{?PROMETHEUS_URL\}?$/.test(value(ds, 'url') ?? '')) report('provisioning/datasources/downbeat.yaml: url must come from ${PROMETHEUS_URL}');
      if (!value(ds, 'uid')) report('provisioning/datasources/downbeat.yaml: the data source needs a fixed uid');
    }
    const dash = read('provisioning/dashboards/downbeat.yaml');
    if (dash) {
      if (value(dash, 'type') !== 'file') report('provisioning/dashboards/downbeat.yaml: the provider is not of type file');
      const path = value(dash, 'path');
      const expanded = path?.replace(/\$\{?GF_PATHS_PROVISIONING\}?/, join(grafanaDir, 'provisioning'));
      if (!expanded || !existsSync(join(resolve(expanded), 'downbeat.json')))
        report(`provisioning/dashboards/downbeat.yaml: path ${JSON.stringify(path)} does not lead to dashboards/downbeat.json`);
    }
  },

  geomap(d, report) {
    for (const p of allPanels(d).filter((x) => x.type === 'geomap')) {
      const layers = p.options?.layers ?? [];
      const ok = layers.some(
        (l) => l.location?.mode === 'lookup' && l.location?.gazetteer === 'public/gazetteer/usa-states.json' && l.location?.lookup === 'state',
      );
      if (!ok) report(`panel ${p.id} "${p.title ?? ''}": no layer looks up the "state" field in public/gazetteer/usa-states.json`);
    }
  },
};

export function lint(dashboard) {
  const problems = [];
  for (const [rule, check] of Object.entries(RULES)) {
    try {
      check(dashboard, (message) => problems.push({ rule, message }));
    } catch (error) {
      problems.push({ rule, message: `could not check: ${error.message}` });
    }
  }
  return problems;
}

// ------------------------------------------------------------------ self-test
const firstOf = (d, type) => allPanels(d).find((p) => p.type === type);
const firstRateTarget = (d) => allPanels(d).flatMap((p) => p.targets ?? []).find((t) => /(?<![a-z])rate\(/.test(t.expr));
const MUTATIONS = [
  ['panel-datasource', 'a panel without datasource', (d) => delete firstOf(d, 'timeseries').datasource],
  ['panel-datasource', 'a target with a hard-coded uid', (d) => (firstOf(d, 'stat').targets[0].datasource = { type: 'prometheus', uid: 'P1809F7CD0C75ACF3' })],
  ['no-hardcoded-uid', 'a hard-coded uid anywhere', (d) => (firstOf(d, 'bargauge').datasource = { type: 'prometheus', uid: 'abc123' })],
  ['no-hardcoded-uid', 'a data source given by name', (d) => (firstOf(d, 'piechart').datasource = 'Prometheus')],
  ['datasource-variable', 'no datasource variable', (d) => (d.templating.list = d.templating.list.filter((v) => v.name !== 'datasource'))],
  ['filter-variables', 'replica not multi-value', (d) => (d.templating.list.find((v) => v.name === 'replica').multi = false)],
  ['panel-units', 'a panel without unit', (d) => delete firstOf(d, 'timeseries').fieldConfig.defaults.unit],
  ['panel-units', 'a misspelt unit', (d) => (firstOf(d, 'stat').fieldConfig.defaults.unit = 'secs')],
  ['panel-title-description', 'a panel without title', (d) => delete firstOf(d, 'stat').title],
  ['panel-title-description', 'a panel without description', (d) => delete firstOf(d, 'geomap').description],
  ['rate-interval', 'a rate over [5m]', (d) => (firstRateTarget(d).expr = firstRateTarget(d).expr.replace('[$__rate_interval]', '[5m]'))],
  ['rate-interval', 'an irate over a subquery', (d) => (firstOf(d, 'timeseries').targets[0].expr = 'sum(irate(downbeat_events_total{instance=~"$replica"}[5m:1m]))')],
  ['template-filters', 'a selector without the replica filter', (d) => (firstOf(d, 'stat').targets[0].expr = 'sum(downbeat_window_streams{window="10m"})')],
  ['template-filters', 'the state map without the state filter', (d) => (firstOf(d, 'geomap').targets[0].expr = firstOf(d, 'geomap').targets[0].expr.replace(', state=~"$state"', ''))],
  ['target-expr', 'a target without expr', (d) => delete firstOf(d, 'bargauge').targets[0].expr],
  ['target-expr', 'an unbalanced expr', (d) => (firstOf(d, 'stat').targets[0].expr += ')')],
  ['unique-ids', 'a duplicate panel id', (d) => (allPanels(d)[2].id = allPanels(d)[1].id)],
  ['grid-layout', 'two panels on top of each other', (d) => (allPanels(d)[2].gridPos = { ...allPanels(d)[1].gridPos })],
  ['dashboard-settings', 'refresh 10s', (d) => (d.refresh = '10s')],
  ['dashboard-settings', 'light style', (d) => (d.style = 'light')],
  ['dashboard-settings', 'last 6 hours', (d) => (d.time = { from: 'now-6h', to: 'now' })],
  ['geomap', 'the map without the US-states gazetteer', (d) => (firstOf(d, 'geomap').options.layers[0].location.gazetteer = 'public/gazetteer/countries.json')],
];

export function selfTest(dashboard) {
  const failures = [];
  let passed = 0;
  const baseline = new Set(lint(dashboard).map((p) => `${p.rule}: ${p.message}`));
  for (const [rule, what, mutate] of MUTATIONS) {
    const copy = structuredClone(dashboard);
    try {
      mutate(copy);
    } catch (error) {
      failures.push(`${what}: the mutation does not apply to this board (${error.message})`);
      continue;
    }
    const fresh = lint(copy).filter((p) => !baseline.has(`${p.rule}: ${p.message}`));
    if (fresh.some((p) => p.rule === rule)) passed++;
    else failures.push(`${what}: expected a "${rule}" problem, got ${fresh.length ? fresh.map((p) => p.rule).join(', ') : 'none'}`);
  }
  return { passed, failures };
}

// ------------------------------------------------------------------ main
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const file = resolve(args.find((a) => !a.startsWith('--')) ?? join(grafanaDir, 'dashboards', 'downbeat.json'));
  let dashboard;
  try {
    dashboard = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    console.error(`lint: cannot read ${file}: ${error.message}`);
    process.exit(1);
  }
  let failed = false;
  if (!args.includes('--no-self-test')) {
    const { passed, failures } = selfTest(dashboard);
    for (const f of failures) console.error(`lint self-test FAILED: ${f}`);
    console.log(`lint self-test: ${passed} passed, ${failures.length} failed`);
    failed ||= failures.length > 0;
  }
  const problems = lint(dashboard);
  for (const p of problems) console.error(`${file}: [${p.rule}] ${p.message}`);
  const rules = Object.keys(RULES).length;
  const failedRules = new Set(problems.map((p) => p.rule)).size;
  console.log(`lint rules: ${rules - failedRules} passed, ${failedRules} failed (${problems.length} problems, ${allPanels(dashboard).length} panels)`);
  failed ||= problems.length > 0;
  process.exit(failed ? 1 : 0);
}
