"""Tabulate finished Pair2Score runs: QWK / MAE per trait x variant as mean ± sd (n) over
runs, printed and written as CSV, Markdown and a bar chart (formats:
`aes_jax/eval/pair2score_table.py`).

    python -m launch.pair2score_table --runs='runs/p2s_*' [--out=PREFIX]
    python -m launch.pair2score_table --runs=runs/p2s_grammar_ws_1,runs/p2s_grammar_ws_2

--runs entries are run directories (each with absolute_metrics.json) or glob patterns,
expanded and sorted (quote them so the shell leaves them alone). --out defaults to
`pair2score_table` in the common parent of the run directories (`runs/pair2score_table`
for the examples above): the table sits beside the runs it summarizes, and rerunning it
on the same runs overwrites the same files.
"""

from __future__ import annotations

from absl import flags

from launch import cli

RUNS = flags.DEFINE_list("runs", None, "Run directories or glob patterns, comma-separated.",
                         required=True)
OUT = flags.DEFINE_string("out", None, "Output path prefix (.csv/.md/.png are added); "
                          "default: pair2score_table in the run directories' common parent.")


def main(argv):
    del argv
    from aes_jax.eval import pair2score_table as p2s

    try:
        run_dirs = p2s.expand_run_dirs(RUNS.value)
    except ValueError as e:
        cli.fail(f"--runs: {e}")
    rows = p2s.read_run_metrics(run_dirs)
    print(f"{len(rows)} runs")
    print(p2s.text_table(rows, "qwk"))
    print()
    print(p2s.text_table(rows, "mae"))
    for path in p2s.write_table(rows, OUT.value or p2s.default_out_prefix(run_dirs)):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
