"""Judge an Autobahn|Testsuite fuzzingclient report (tools/autobahn/run).

Prints one summary line per outcome, the cases that failed, and exits 1 if
any case's behavior or behaviorClose is outside the accepted sets.
Runs on Python 2.7 (the suite's interpreter) and Python 3.
"""
from __future__ import print_function

import json
import sys

BEHAVIOR_OK = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
CLOSE_OK = {"OK", "INFORMATIONAL"}


def case_key(case):
    return [int(part) for part in case.split(".")]


def main(path):
    with open(path) as f:
        index = json.load(f)
    behaviors, closes, failed = {}, {}, []
    for agent, cases in sorted(index.items()):
        for case in sorted(cases, key=case_key):
            result = cases[case]
            behavior = result["behavior"]
            close = result["behaviorClose"]
            behaviors[behavior] = behaviors.get(behavior, 0) + 1
            closes[close] = closes.get(close, 0) + 1
            if behavior not in BEHAVIOR_OK or close not in CLOSE_OK:
                failed.append("%s %s: behavior %s, behaviorClose %s"
                              % (agent, case, behavior, close))
    total = sum(behaviors.values())
    for name, count in sorted(behaviors.items()):
        print("behavior %s: %d" % (name, count))
    for name, count in sorted(closes.items()):
        print("behaviorClose %s: %d" % (name, count))
    for line in failed:
        print("FAILED " + line)
    print("autobahn: %d cases, %d failed" % (total, len(failed)))
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
