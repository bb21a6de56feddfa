"""StepER's stepwise training records from multi-hop questions.

    # the project-written demo corpus with the oracle teacher (no model needed)
    python -m launch.build_stepwise --output_dir=data/steper_demo
    # HotpotQA / 2WikiMultiHopQA JSON or MuSiQue JSONL with a local LLaMA as the teacher
    python -m launch.build_stepwise --input=hotpot_train.json,hotpot_dev.json \
        --teacher=PATH/Llama-3.1-70B-Instruct --k=4 --output_dir=data/steper_hotpot

Writes OUT/<input stem>.jsonl ({"id", "question", "answer", "steps": [{"type", "input",
"output", "passages"}], "teacher"}), OUT/bm25/ (the passage store and its index) and
OUT/manifest.json (teacher, counts kept / dropped per reason, the readers' reports).
"""

from __future__ import annotations

import json

from absl import flags

from launch import cli

INPUT = flags.DEFINE_list("input", [], "Multi-hop QA files (HotpotQA / 2Wiki JSON, MuSiQue "
                          "JSONL); empty = the project-written demo corpus.")
PASSAGES = flags.DEFINE_string("passages", "", "Passage store JSONL ({title, text}); empty = "
                               "the inputs' contexts (or the demo corpus's store).")
TEACHER = flags.DEFINE_string("teacher", "oracle", "oracle (demo corpus: traces from the "
                              "known hop chains) or a local LLaMA dir / .gguf.")
K = flags.DEFINE_integer("k", 4, "BM25 passages per step.")
MAX_STEPS = flags.DEFINE_integer("max_steps", 5, "Teacher: steps in all (init, expansions, "
                                 "aggregation).")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 48, "Teacher: tokens per step.")
BATCH = flags.DEFINE_integer("batch_size", 8, "Teacher: questions per generation batch.")
LIMIT = flags.DEFINE_integer("limit", 0, "Questions per input file (0 = all).")
SINGLE_STEP = flags.DEFINE_bool("single_step", False, "Vanilla KD records: one retrieval "
                                 "for the question, then the gold answer (oracle).")
STRICT = flags.DEFINE_bool("strict", False, "Raise on the first bad record instead of "
                           "skipping and counting it.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory.", required=True)


def main(argv):
    del argv
    from aes_jax.eval.stepwise_builder import BuildOptions, build_stepwise

    options = BuildOptions(teacher=TEACHER.value, k=K.value, max_steps=MAX_STEPS.value,
                           max_new_tokens=MAX_NEW_TOKENS.value, batch_size=BATCH.value,
                           limit=LIMIT.value, strict=STRICT.value,
                           single_step=SINGLE_STEP.value)
    manifest = build_stepwise(INPUT.value, OUTPUT_DIR.value, options, PASSAGES.value or None)
    for name, split in manifest["splits"].items():
        print(f"{name}: {split['records']} records from {split['questions']} questions "
              f"(dropped {json.dumps(split['dropped'])}); steps {json.dumps(split['steps'])}")
        print(f"  {split['read']}")
    print(f"teacher {manifest['teacher']}, {manifest['passages']} passages; wrote "
          f"{OUTPUT_DIR.value}/manifest.json")


if __name__ == "__main__":
    cli.run(main)
