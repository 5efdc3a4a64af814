"""Rebuild nemo_neko/assets/hyporadise/ from the HyPoradise JSON files.

python data_prep/build_hyporadise_sample.py ../shared/data/hyporadise
"""

import argparse

from nemo_neko.data.sample_data import ASSET_DIR, build_hyporadise_sample

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", help="folder with train_atis.json, test_*.json")
    parser.add_argument("--out", default=str(ASSET_DIR), help="output folder")
    args = parser.parse_args()
    for domain, counts in build_hyporadise_sample(args.source_dir, args.out).items():
        print(f"{domain:10s} train {counts['train']:5d}  test {counts['test']:5d}")
