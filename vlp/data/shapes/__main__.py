"""``python -m vlp.data.shapes write --out DIR --num N``: write WebDataset shards."""

import sys

from vlp.data.shapes.dataset import main

if __name__ == "__main__":
    sys.exit(main())
