"""kafkaml-ray on Kubernetes with KubeRay: render RayCluster, RayJob and RayService manifests,
and apply, inspect and delete them through the Kubernetes API (``ray.io/v1``).

Every pod runs the project's image (``kafkaml-ray:0.1.0``, and ``kafkaml-ray:0.1.0-gpu`` for
GPU workers, built from the repository's ``Dockerfile``), reads its settings (``KAFKAML_*``)
from the Secret ``kafkaml-ray-env`` and keeps Ray's token authentication on, with the token
from the Secret ``kafkaml-ray-auth``. No secret ever appears in a rendered manifest.

The package re-exports its two modules: `~kafkaml_ray.kuberay.render` builds the manifests,
`~kafkaml_ray.kuberay.api` applies them (server-side apply), inspects and deletes them
(`KubeRayClient`); ``kafkaml-ray k8s`` is `~kafkaml_ray.cli.k8s`.

>>> from kafkaml_ray.kuberay import render_rayservice
>>> svc = render_rayservice(3, replicas=2, gpu_fraction=0.25)
>>> svc["kind"], svc["metadata"]["name"]
('RayService', 'kafkaml-inference-3')
>>> import yaml
>>> app = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]
>>> app["name"], app["args"], app["deployments"][1]["ray_actor_options"]["num_gpus"]
('inference-3', {'inference_id': 3}, 0.25)
"""

from kafkaml_ray.kuberay import api, render
from kafkaml_ray.kuberay.api import *  # noqa: F403 - the public names of each module
from kafkaml_ray.kuberay.render import *  # noqa: F403

__all__ = [*render.__all__, *api.__all__]
