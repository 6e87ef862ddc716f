"""``python -m benchmarks.online``: the benchmark's command line (`benchmarks.online`)."""

from benchmarks.online import main

if __name__ == "__main__":
    main()
