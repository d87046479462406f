#!/usr/bin/env python3
"""Check the prometheus-adapter rule that feeds the Kafka overlay's autoscaler.

    adapter_rule.py [--require-promtool] VALUES.yaml RENDERED.yaml...

For every External metric of every HorizontalPodAutoscaler in the renders:
  - a rule of VALUES (`rules.external`, the prometheus-adapter chart's values)
    must serve that metric name;
  - its metricsQuery is expanded as the adapter would for that HPA (<<.Series>>,
    and <<.LabelMatchers>> = the HPA's namespace plus its metric selector) and run
    by `promtool test rules` on synthetic series: two replicas' per-partition lag
    in the HPA's namespace must sum to the total, while the same pods scraped under
    another job and another namespace's series are left out; and the rule's
    seriesQuery must find the engine's series (how the adapter discovers them).
Without promtool the query test is skipped (an error with --require-promtool).
Needs Python 3.11 and PyYAML.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def external_metrics(rendered: list[pathlib.Path]):
    for path in rendered:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "HorizontalPodAutoscaler":
                continue
            for metric in doc["spec"].get("metrics") or []:
                if metric.get("type") == "External":
                    yield path, doc, metric["external"]["metric"]


def exposed_name(rule: dict) -> str | None:
    series = SERIES.match(rule.get("seriesQuery", ""))
    name = rule.get("name") or {}
    if not series:
        return None
    if "as" in name:
        pattern = name.get("matches", "^(.*)$")
        if not re.search(pattern, series.group(1)):
            return None
        return re.sub(pattern, name["as"].replace("${1}", r"\1").replace("$1", r"\1"), series.group(1))
    return series.group(1)


def expand(query: str, series: str, matchers: list[str]) -> str:
    return (query.replace("<<.Series>>", series)
                 .replace("<<.LabelMatchers>>", ",".join(matchers))
                 .replace("<<.GroupBy>>", ""))


def promtool_test(rule: dict, namespace: str, selector: dict, require: bool) -> tuple[bool, str]:
    series = SERIES.match(rule["seriesQuery"]).group(1)
    matchers = [f'namespace="{namespace}"'] + [f'{k}="{v}"' for k, v in sorted(selector.items())]
    query = expand(rule["metricsQuery"], series, matchers)
    job = selector.get("job", "downbeat")
    promtool = shutil.which("promtool")
    if not promtool:
        return (not require), f"promtool not found: query `{query}` not tested"

    def s(ns, jb, pod, partition):
        labels = {"__name__": series, "namespace": ns, "job": jb, "pod": pod, "partition": str(partition)}
        labels.update({k: v for k, v in selector.items() if k != "job"})
        return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"

    inputs = [
        (s(namespace, job, f"{job}-0", 0), "100+0x8"),
        (s(namespace, job, f"{job}-0", 1), "200+0x8"),
        (s(namespace, job, f"{job}-1", 2), "3000+0x8"),
        (s(namespace, f"{job}-headless", f"{job}-0", 0), "100+0x8"),  # the same pod under another job
        (s("elsewhere", job, f"{job}-0", 0), "50000+0x8"),             # another namespace's group
    ]
    rules = {"groups": [{"name": "adapter", "rules": [
        {"record": "hpa_input", "expr": query},
        {"record": "adapter_discovered_series", "expr": f"count({rule['seriesQuery']})"},
    ]}]}
    tests = {
        "rule_files": ["adapter-rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [{"series": series + labels, "values": values} for labels, values in inputs],
            "promql_expr_test": [
                {"expr": "hpa_input", "eval_time": "1m", "exp_samples": [{"labels": "hpa_input", "value": 3300}]},
                {"expr": "adapter_discovered_series", "eval_time": "1m",
                 "exp_samples": [{"labels": "adapter_discovered_series", "value": len(inputs)}]},
            ],
        }],
    }
    with tempfile.TemporaryDirectory(prefix="downbeat-adapter-") as tmp:
        d = pathlib.Path(tmp)
        (d / "adapter-rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        (d / "adapter-test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
        run = subprocess.run([promtool, "test", "rules", "adapter-test.yml"], cwd=d, capture_output=True, text=True)
    if run.returncode != 0:
        return False, f"promtool test of `{query}` failed:\n{run.stdout}{run.stderr}"
    return True, f"`{query}` sums 2 replicas' partitions (3300), leaves out another job and namespace (promtool)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require-promtool", action="store_true")
    parser.add_argument("values", type=pathlib.Path)
    parser.add_argument("rendered", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    values = yaml.safe_load(args.values.read_text())
    rules = ((values or {}).get("rules") or {}).get("external") or []
    status, seen = 0, 0
    for path, hpa, metric in external_metrics(args.rendered):
        seen += 1
        where = f"{path} HorizontalPodAutoscaler/{hpa['metadata'].get('namespace')}/{hpa['metadata']['name']}"
        served = [r for r in rules if exposed_name(r) == metric["name"]]
        if len(served) != 1:
            print(f"adapter FAIL {where}: {len(served)} rule(s) of {args.values} serve external metric {metric['name']}")
            status = 1
            continue
        selector = (metric.get("selector") or {}).get("matchLabels") or {}
        ok, message = promtool_test(served[0], hpa["metadata"].get("namespace", "default"), selector, args.require_promtool)
        print(f"adapter {'ok  ' if ok else 'FAIL'} {where}: {metric['name']}: {message}")
        status |= 0 if ok else 1
    if not seen:
        print("adapter: no HPA with an External metric in the renders")
    return status


if __name__ == "__main__":
    sys.exit(main())
