"""``python -m mixlab``: the lab's command moved to its own distribution (``mixlab-lab``)."""
import sys

if __name__ == "__main__":
    sys.exit("mixlab: the lab is its own distribution: pip install ./lab (mixlab-lab), then run `mixlab` "
             "or `python -m mixlab_lab`")
