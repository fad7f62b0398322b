"""Stage 2: train the OneRec/TIGER generator on a semantic-ID artifact and evaluate it.

    python scripts/train_onerec.py --gin_file configs/amazon-beauty/onerec.gin --run_dir runs/beauty-onerec
    python scripts/train_onerec.py --gin_file configs/amazon-beauty/onerec.gin --run_dir runs/beauty-onerec --resume

The artifact comes from `train_onerec.semantic_ids_dir` (a scripts/train_rqvae.py run directory) and
must have been built for the same dataset split. Writes results.json, metrics.jsonl, checkpoints.
"""
import retrieval.data  # noqa: F401  (registers the dataset sources)
from onerec.pipeline import summary_line, train_onerec
from retrieval.core import cli


def main(args, run_dir):
    print(summary_line(train_onerec(run_dir, resume=args.resume)))


if __name__ == "__main__":
    cli.run(main, "Train and evaluate the OneRec generative retriever.",
            extra_args=lambda p: p.add_argument("--resume", action="store_true",
                                                help="continue from run_dir/last checkpoint"))
