"""deploy/helm/ciclo: rendered and linted offline with helm-python-sdk (Helm's Go SDK, no helm
binary), every manifest validated against Kubernetes' schemas with kubernetes-validate."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, check_settings_accept, known_settings
from tests.fixtures import unavailable

CHART = DEPLOY / "helm" / "ciclo"
PRODUCTION = CHART / "ci" / "production-values.yaml"
COMPONENTS = ("ingest", "journey", "dispatch")
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known.
KUBE_MIN = "1.25.0"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except ImportError:
        unavailable("helm-python-sdk (PyPI)")
    helm_python.disable_logging()
    return helm_python


@pytest.fixture(scope="module")
def kv() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate (PyPI)")
    return kubernetes_validate


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION.read_text())
    return values


VALUE_SETS = {"default": lambda: None, "production": production_values}


def render(chart: Any, values: dict[str, Any] | None, **options: Any) -> list[Manifest]:
    out = chart.render(values=values, name="ciclo", namespace="shop", is_install=True, **options)
    docs: list[Manifest] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def is_hook(doc: Manifest) -> bool:
    return "helm.sh/hook" in doc["metadata"].get("annotations", {})


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, chart: Any) -> tuple[str, list[Manifest]]:
    return request.param, render(chart, VALUE_SETS[request.param]())


def with_values(**changes: Any) -> dict[str, Any]:
    """Default values with dotted keys changed: with_values(**{"journey.replicaCount": 9})."""
    values: dict[str, Any] = {}
    for dotted, value in changes.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


# --- lint and Kubernetes schemas -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean(helm: Any, name: str) -> None:
    for kube in (KUBE_MIN, "1.33.0"):
        report = helm.lint(CHART, VALUE_SETS[name](), strict=True, kube_version=f"v{kube}")
        assert report["errors"] == []
        # Severity 1 is informational ("icon is recommended"); warnings and errors are not allowed.
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_manifest_is_valid_kubernetes(kv: Any, rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            continue  # a CRD: checked on its own below
        for version in (KUBE_MIN, kv.latest_version()):
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc}"
                )
        checked += 1
    assert checked >= 12


def test_the_validator_rejects_a_broken_manifest(
    kv: Any, rendered: tuple[str, list[Manifest]]
) -> None:
    """Guards the test above: kubernetes-validate does fail on a bad manifest."""
    deployment = copy.deepcopy(next(d for d in rendered[1] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = (
        "/livez"
    )
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_MIN, strict=True)


# --- what the chart renders ----------------------------------------------------------------------


def test_a_deployment_per_service(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"ciclo-{c}" for c in COMPONENTS}
    for component in COMPONENTS:
        spec = deployments[f"ciclo-{component}"]["spec"]
        pod = spec["template"]["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        (container,) = pod["containers"]
        assert container["args"] == ["serve", component]
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        tmp = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
        assert {v["name"] for v in pod["volumes"] if "emptyDir" in v} >= tmp != set()
        assert pod["automountServiceAccountToken"] is False


def test_services_select_their_pods(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    services = by_kind(docs, "Service")
    deployments = by_kind(docs, "Deployment")
    assert set(services) == {f"ciclo-{c}" for c in COMPONENTS}
    for name, service in services.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == "http"


def test_disruption_budgets(rendered: tuple[str, list[Manifest]]) -> None:
    _, docs = rendered
    budgets = by_kind(docs, "PodDisruptionBudget")
    deployments = by_kind(docs, "Deployment")
    assert set(budgets) == set(deployments)
    for name, pdb in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # maxUnavailable, never minAvailable: a one-replica service must not block node drains.
        assert pdb["spec"]["maxUnavailable"] == 1


def test_config_map_and_secret_feed_ciclo(
    rendered: tuple[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, docs = rendered
    (config,) = by_kind(docs, "ConfigMap").values()
    data = config["data"]
    assert data["CICLO_AUTO_MIGRATE"] == "false"
    assert data["CICLO_DEMO"] == "false"
    assert data["CICLO_HOST"] == "0.0.0.0"
    assert data["CICLO_BUS_URL"].startswith("kafka://")
    assert not {
        "CICLO_DATABASE_URL",
        "CICLO_SENDGRID_API_KEY",
        "CICLO_UNSUBSCRIBE_SECRET",
    } & set(data), "secrets in a ConfigMap"
    assert set(data) <= known_settings()
    secrets = {n: s for n, s in by_kind(docs, "Secret").items() if not is_hook(s)}
    for deployment in by_kind(docs, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        refs = container["envFrom"]
        assert refs[0] == {"configMapRef": {"name": config["metadata"]["name"]}}
        secret_name = refs[1]["secretRef"]["name"]
    if name == "default":
        assert set(secrets) == {secret_name}
        env = {**data, **secrets[secret_name]["stringData"]}
    else:
        assert secrets == {}, "with existingSecret the chart creates no Secret"
        assert secret_name == "ciclo-secrets"
        env = {
            **data,
            "CICLO_DATABASE_URL": "postgresql+asyncpg://ciclo:pw@pg:5432/ciclo",
            "CICLO_SENDGRID_API_KEY": "SG.test",
            "CICLO_UNSUBSCRIBE_SECRET": "a-real-secret-from-the-operator",
        }
    # What the pods will see is accepted by Ciclo's own settings classes.
    check_settings_accept(env, monkeypatch)


def test_migration_job_is_a_hook_with_its_own_config(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    (job,) = by_kind(docs, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-weight"] == "-5"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # The chart's ServiceAccount does not exist yet at pre-install.
    assert "serviceAccountName" not in pod
    steps = [*pod["initContainers"], *pod["containers"]]
    assert [c["args"] for c in steps] == [["migrate"], ["topics", "create"]]
    (config,) = by_kind(docs, "ConfigMap").values()
    for container in steps:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == config["data"], "the Job carries the same settings as the ConfigMap"
        refs = container["envFrom"]
        assert all("configMapRef" not in r for r in refs), "the ConfigMap does not exist yet"
        (secret_ref,) = refs
        secret_name = secret_ref["secretRef"]["name"]
    if name == "production":
        assert secret_name == "ciclo-secrets"
    else:
        # A hook Secret created before the Job (lower weight), gone with it on success.
        secret = by_kind(docs, "Secret")[secret_name]
        hook = secret["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(hook["helm.sh/hook-weight"]) < -5
        assert "hook-succeeded" in hook["helm.sh/hook-delete-policy"]
        assert "CICLO_DATABASE_URL" in secret["stringData"]


def test_optional_parts_are_off_by_default(chart: Any) -> None:
    kinds = {d["kind"] for d in render(chart, None)}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "Ingress"}


def test_production_values(chart: Any) -> None:
    docs = render(chart, production_values())
    deployments = by_kind(docs, "Deployment")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"ciclo-ingest", "ciclo-dispatch"}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        # The HPA owns the replica count: the Deployment must not reset it on upgrade.
        assert "replicas" not in deployments[name]["spec"]
    assert hpas["ciclo-ingest"]["spec"]["minReplicas"] == 3
    assert deployments["ciclo-journey"]["spec"]["replicas"] == 4
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = by_kind(docs, "Service")["ciclo-journey"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    (ingress,) = by_kind(docs, "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "events.shop.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "ciclo-ingest",
        "port": {"name": "http"},
    }
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == set(deployments)
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        ports = {p.get("port") for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
        assert {53, 9092, 5432, 443} <= ports


# --- what the chart refuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"journey.replicaCount": 9},
            "journey.replicaCount (9) must not exceed bus.partitions (8)",
        ),
        (
            {"bus.partitions": 12, "journey.replicaCount": 13},
            "journey.replicaCount (13) must not exceed bus.partitions (12)",
        ),
        ({"dispatch.replicaCount": 9}, "dispatch.replicaCount (9) must not exceed"),
        (
            {"dispatch.autoscaling.enabled": True, "dispatch.autoscaling.maxReplicas": 20},
            "dispatch.autoscaling.maxReplicas (20) must not exceed",
        ),
        ({"config.env": "production"}, "not the local sink"),
        (
            {"config.env": "production", "email.provider": "sendgrid"},
            "needs email.publicUrl to be the https:// address",
        ),
        (
            {
                "config.env": "production",
                "email.provider": "sendgrid",
                "email.publicUrl": "https://localhost:8443",
            },
            "needs email.publicUrl to be the https:// address",
        ),
        ({"email.provider": "sendgrid"}, "needs email.sendgrid.apiKey or existingSecret"),
        ({"database.url": ""}, "set database.url or existingSecret"),
        (
            {"networkPolicy.enabled": True, "serviceMonitor.enabled": True},
            "networkPolicy.metricsFrom",
        ),
        ({"ingress.enabled": True}, "at least one host"),
    ],
)
def test_render_refuses_inconsistent_values(
    helm: Any, chart: Any, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(chart, with_values(**changes))


def test_journey_replicas_up_to_the_partition_count_are_fine(chart: Any) -> None:
    docs = render(chart, with_values(**{"bus.partitions": 3, "journey.replicaCount": 3}))
    assert by_kind(docs, "Deployment")["ciclo-journey"]["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"journey.replicaCount": 0}, "/journey/replicaCount"),
        ({"journey.replicaCount": "3"}, "/journey/replicaCount"),
        ({"bus.partitions": 0}, "/bus/partitions"),
        ({"bus.url": "sqlite:///data/bus.db"}, "/bus/url"),
        ({"ingest.replicas": 3}, "/ingest"),
        ({"email.provider": "mailgun"}, "/email/provider"),
        ({"config.extraEnv": {"LOG_LEVEL": "debug"}}, "LOG_LEVEL"),
        ({"podSecurityContext.runAsNonRoot": False}, "/podSecurityContext/runAsNonRoot"),
        ({"ingest.autoscaling.targetCPUUtilizationPercentage": 150}, "/ingest/autoscaling"),
    ],
)
def test_schema_rejects_bad_values(
    helm: Any, chart: Any, changes: dict[str, Any], where: str
) -> None:
    values = with_values(**changes)
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(values)
    # install and template validate too, before anything renders.
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_schema_accepts_the_shipped_values(chart: Any, name: str) -> None:
    # Without a schema file validation would pass vacuously.
    assert (CHART / "values.schema.json").is_file()
    chart.validate_schema(VALUE_SETS[name]())  # raises HelmValuesError naming the bad key
