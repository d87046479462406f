#!/usr/bin/env python3
"""Fail when modules import each other in a circle.

Reads the module graph that `cargo modules dependencies --no-fns --no-traits
--no-types` prints (Graphviz dot) on stdin and looks for strongly connected
components among its "uses" edges. (cargo-modules' own `--acyclic` judges the
item graph, where every type and its methods form a cycle, so it cannot be
used for modules.) `--self-test` checks that a cycle is reported.
"""
import re
import sys

EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')


def cycles(dot):
    graph = {}
    for line in dot.splitlines():
        match = EDGE.match(line)
        if match and match.group(1) != match.group(2):
            graph.setdefault(match.group(1), set()).add(match.group(2))
            graph.setdefault(match.group(2), set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found, sum(len(s) for s in graph.values())


def main():
    if sys.argv[1:] == ["--self-test"]:
        dot = '"a" -> "b" [label="uses"]\n"b" -> "c" [label="uses"]\n"c" -> "a" [label="uses"]\n'
        assert cycles(dot)[0] == [["a", "b", "c"]], cycles(dot)
        assert cycles('"a" -> "b" [label="uses"]\n"a" -> "b" [label="owns"]\n')[0] == []
        print("module-cycles self-test: ok")
        return 0
    found, edges = cycles(sys.stdin.read())
    if edges == 0:
        print("module-cycles: no uses edges read; is the cargo-modules output empty?", file=sys.stderr)
        return 1
    for component in found:
        print("modules import each other in a circle: " + ", ".join(component), file=sys.stderr)
    if not found:
        print(f"module-cycles: {edges} uses edges, no cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
