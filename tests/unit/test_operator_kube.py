"""What the operator reads from the API server's errors."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from rillet_operator.apply import namespace_terminating
from rillet_operator.kube import error_message


def api_error(status: int, body: object) -> ApiException:
    error = ApiException(status=status, reason="Forbidden")
    error.body = json.dumps(body) if body is not None else None
    return error


def test_a_terminating_namespace_is_told_by_the_status_causes() -> None:
    body = {
        "kind": "Status",
        "message": 'configmaps "x" is forbidden: unable to create new content in namespace '
        "smoke because it is being terminated",
        "reason": "Forbidden",
        "details": {
            "name": "x",
            "kind": "configmaps",
            "causes": [
                {"reason": "NamespaceTerminating", "message": "namespace smoke is being terminated"}
            ],
        },
        "code": 403,
    }
    assert namespace_terminating(api_error(403, body))
    assert error_message(api_error(403, body)).startswith('configmaps "x" is forbidden')


def test_a_namespace_already_gone_counts_as_terminating() -> None:
    """Creating in a namespace the controller has finished deleting: 404 on the namespace."""
    body = {
        "kind": "Status",
        "message": 'namespaces "e2e-14" not found',
        "reason": "NotFound",
        "details": {"name": "e2e-14", "kind": "namespaces"},
        "code": 404,
    }
    assert namespace_terminating(api_error(404, body))
    secret_missing = {"reason": "NotFound", "details": {"name": "x", "kind": "secrets"}}
    assert not namespace_terminating(api_error(404, secret_missing))


def test_other_errors_are_not_a_terminating_namespace() -> None:
    assert not namespace_terminating(api_error(403, {"kind": "Status", "reason": "Forbidden"}))
    assert not namespace_terminating(api_error(500, None))
    assert not namespace_terminating(api_error(502, "<html>bad gateway</html>"))
    assert error_message(api_error(500, None)) == "500 Forbidden"
