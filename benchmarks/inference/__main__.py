"""``python -m benchmarks.inference``: the benchmark's command line (`benchmarks.inference`)."""

from benchmarks.inference import main

if __name__ == "__main__":
    main()
