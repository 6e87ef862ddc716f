"""``python -m benchmarks.train``: the benchmark's command line (`benchmarks.train`)."""

from benchmarks.train import main

if __name__ == "__main__":
    main()
