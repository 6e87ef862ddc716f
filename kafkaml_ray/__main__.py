"""`python -m kafkaml_ray` is the `kafkaml-ray` command."""

from kafkaml_ray.cli import main

main()
