# The image of every Ray pod of kafkaml-ray on KubeRay: Ray 2.60 with the project installed.
#   docker build -t kafkaml-ray:0.1.0 .
#   docker build -t kafkaml-ray:0.1.0-gpu --build-arg BASE=rayproject/ray:2.60.0-py311-gpu .
# The rayproject images bring what KubeRay expects (the ray user, bash, wget for probes).
ARG BASE=rayproject/ray:2.60.0-py311
FROM ${BASE}

WORKDIR /home/ray/kafkaml-ray

# Dependencies first (a layer that survives code changes): the lock pins every version CI
# tests, as constraints; the extras choose what gets installed (no test or UI packages).
COPY --chown=ray:users requirements/lock.txt requirements/lock.txt
COPY --chown=ray:users pyproject.toml README.md ./
RUN mkdir kafkaml_ray && touch kafkaml_ray/__init__.py \
 && pip install --no-cache-dir -c requirements/lock.txt ".[torch,tensorflow,k8s,postgres]" \
 && pip uninstall -y kafkaml-ray && rm -rf kafkaml_ray build

COPY --chown=ray:users kafkaml_ray kafkaml_ray
RUN pip install --no-cache-dir --no-deps . && rm -rf build \
 && python -c "import kafkaml_ray.train.job, kafkaml_ray.kuberay" \
 && kafkaml-ray --version
