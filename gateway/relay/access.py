"""Access rights of the services this server provides, as X-Road's server proxy checks them.

A request for a service of a local client is allowed when the service exists (by code; rights
are per service code, whatever the version), is not disabled, has the type the request uses
(SOAP or REST), and one of the client's access rules names the caller: the caller's own
identifier (subsystem or member), a global group of the global configuration it belongs to, or
a local group of that client.  REST rules may narrow the right to endpoints (method and path
pattern: ``*`` is one path segment, ``**`` any number).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import AccessRule, ClientConfig, EndpointRule, ServiceConfig
from protocols.xroad.faults import SERVER_SERVERPROXY, XRoadFault

# Is (caller client id) a member of global group (instance, code)?
GroupCheck = Callable[[str, str, str], bool]


def _fault(code: str, text: str) -> XRoadFault:
    return XRoadFault(code, text, prefix=SERVER_SERVERPROXY)


def _segments(path: str) -> list[str] | None:
    """Path segments, or None for a path that tries to climb out (``..``) or is not absolute."""
    if not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return parts


def path_matches(pattern: str, path: str) -> bool:
    """``*`` matches one segment, ``**`` any number (zero included); segments compare exactly."""
    pat = _segments(pattern if pattern.startswith("/") else "/" + pattern)
    got = _segments(path)
    if pat is None or got is None:
        return False

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(got)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(got) + 1))
        if j == len(got):
            return False
        return (pat[i] == "*" or pat[i] == got[j]) and match(i + 1, j + 1)

    return match(0, 0)


def endpoint_matches(rule: EndpointRule, method: str, path: str) -> bool:
    return rule.method in ("*", method.upper()) and path_matches(rule.path, path)


def _subject_matches(subject: str, caller: str, client: ClientConfig, in_group: GroupCheck) -> bool:
    if subject.startswith("GLOBALGROUP:"):
        instance, _, code = subject[len("GLOBALGROUP:"):].partition("/")
        return bool(code) and in_group(caller, instance, code)
    if subject.startswith("LOCALGROUP:"):
        members = dict(client.local_groups).get(subject[len("LOCALGROUP:"):], ())
        return caller in members
    return subject == caller


def check_access(client: ClientConfig, service_code: str, caller: str, in_group: GroupCheck, *,
                 rest: bool = False, method: str = "", path: str = "") -> ServiceConfig:
    """The service to call, or the X-Road fault X-Road's server proxy answers."""
    service = client.service(service_code)
    if service is None:
        raise _fault("UnknownService", f"Unknown service: SERVICE:{client.id}/{service_code}")
    if service.disabled:
        notice = service.notice or f"Service SERVICE:{client.id}/{service_code} is disabled"
        raise _fault("ServiceDisabled", notice)
    if (service.type == "rest") != rest:
        kind = "REST" if service.type == "rest" else "SOAP"
        raise _fault("ServiceType", f"Service SERVICE:{client.id}/{service_code} is a {kind} service")
    if rest and service.endpoints and not any(endpoint_matches(e, method, path) for e in service.endpoints):
        raise _fault("UnknownService", f"No endpoint {method} {path} in service {service_code}")
    for rule in client.access:
        if not _rule_covers(rule, service_code, rest, method, path):
            continue
        if _subject_matches(rule.subject, caller, client, in_group):
            return service
    raise _fault("AccessDenied", f"Request is not allowed: SERVICE:{client.id}/{service_code}")


def _rule_covers(rule: AccessRule, service_code: str, rest: bool, method: str, path: str) -> bool:
    if "*" not in rule.services and service_code not in rule.services:
        return False
    if rest and rule.endpoints:
        return any(endpoint_matches(e, method, path) for e in rule.endpoints)
    return True


def allowed_services(client: ClientConfig, caller: str, in_group: GroupCheck) -> list[ServiceConfig]:
    """The services ``caller`` may call (X-Road's allowedMethods metaservice)."""
    out = []
    for service in client.services:
        if service.disabled:
            continue
        for rule in client.access:
            if ("*" in rule.services or service.code in rule.services) and _subject_matches(
                    rule.subject, caller, client, in_group):
                out.append(service)
                break
    return out
