#!/usr/bin/env python3
"""The fake API server's semantics, checked over HTTPS with no Kubernetes client.

Run: python3 tests/k8s/test_fake_apiserver.py [-v] [TestClass[.test]]
One server is started for the whole run (certificates from gen_certs.sh);
every test starts from POST /_fake/reset.
"""

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_spdy  # noqa: E402  (the SPDY framing, for the hand-written client)

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "unit-token"
SERVER = {}


def setUpModule():
    tmp = tempfile.mkdtemp(prefix="fake-k8s-")
    SERVER["tmp"] = tmp
    subprocess.run([os.path.join(HERE, "gen_certs.sh"), tmp], check=True)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fake_apiserver.py"), "--port", "0",
         "--cert", os.path.join(tmp, "server.crt"), "--key", os.path.join(tmp, "server.key"),
         "--client-ca", os.path.join(tmp, "ca.crt"), "--token", TOKEN, "--token", "other-token,alice",
         "--forbid", "alice:get:secrets:locked", "--controller-delay", "0.1", "--log-interval", "0.05",
         "--bookmark-interval", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if not os.environ.get("FAKE_K8S_STDERR") else None,
        text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError("the fake did not start: %r" % line)
    SERVER.update(proc=proc, port=int(line.split()[1]))
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca.crt"))
    SERVER["ctx"] = ctx


def tearDownModule():
    proc = SERVER.get("proc")
    if proc:
        proc.terminate()
        SERVER["exit"] = proc.wait(10)
        proc.stdout.close()
        if SERVER["exit"] != 0:
            raise AssertionError("the fake exited %s on SIGTERM" % SERVER["exit"])
    subprocess.run(["rm", "-rf", SERVER.get("tmp", "/nonexistent")])


class Resp:
    def __init__(self, status, headers, data):
        self.status, self.headers, self.data = status, headers, data
        try:
            self.json = json.loads(data) if data else None
        except ValueError:
            self.json = None

    @property
    def text(self):
        return self.data.decode()

    def __repr__(self):
        return "<%d %s>" % (self.status, self.data[:300])


def connect(ctx=None, timeout=10):
    return http.client.HTTPSConnection("127.0.0.1", SERVER["port"], context=ctx or SERVER["ctx"], timeout=timeout)


def call(method, path, body=None, ctype="application/json", token=TOKEN, headers=None, ctx=None):
    conn = connect(ctx)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + token
    if body is not None:
        hdrs["Content-Type"] = ctype
        body = body if isinstance(body, (bytes, str)) else json.dumps(body)
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    resp = Resp(r.status, r.headers, r.read())
    conn.close()
    return resp


def ok(method, path, body=None, expect=(200, 201), **kw):
    r = call(method, path, body, **kw)
    if r.status not in (expect if isinstance(expect, tuple) else (expect,)):
        raise AssertionError("%s %s: %r" % (method, path, r))
    return r.json


def control(method, name, body=None):
    r = call(method, "/_fake/" + name, body, token=None)
    if r.status != 200:
        raise AssertionError("control %s %s: %r" % (method, name, r))
    return r.json


class Watch:
    """A streaming watch: events() yields decoded lines until the stream ends."""

    def __init__(self, path, timeout=10):
        self.conn = connect(timeout=timeout)
        self.conn.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
        self.resp = self.conn.getresponse()

    def next(self):
        line = self.resp.readline()
        return json.loads(line) if line else None

    def until(self, pred, limit=100):
        seen = []
        for _ in range(limit):
            ev = self.next()
            if ev is None:
                break
            seen.append(ev)
            if pred(ev):
                return ev, seen
        raise AssertionError("no matching event among %s" % [(e["type"], e["object"].get("metadata", {}).get("name"))
                                                            for e in seen])

    def close(self):
        self.conn.close()


def wait_for(fn, timeout=10, interval=0.05):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


NS = "/api/v1/namespaces"
SETTLED = [0]


def settle():
    """Returns once the controllers have handled everything queued before
    the call: for a test that checks something did *not* happen, instead of
    sleeping and hoping the controllers had their turn. The controllers are
    one thread taking work in the order it falls due; a namespace deleted now
    is removed by it (even with controllers switched off) after all of that."""
    SETTLED[0] += 1
    name = "settle-%d" % SETTLED[0]
    ok("POST", NS, ns_obj(name))
    ok("DELETE", NS + "/" + name)
    wait_for(lambda: call("GET", NS + "/" + name).status == 404)


def ns_obj(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret(name, data=None, **extra):
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data or {}}
    obj.update(extra)
    return obj


def deployment(name="web", replicas=2, image="nginx:1.27", **meta):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(name=name, **meta),
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def cond(obj, ctype):
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


class Base(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        control("POST", "reset")
        ok("POST", NS, ns_obj("demo"))

    def assertStatus(self, r, code, reason, message=None):
        self.assertEqual(r.status, code, r)
        self.assertEqual(r.json["kind"], "Status")
        self.assertEqual(r.json["apiVersion"], "v1")
        self.assertEqual(r.json["status"], "Failure")
        self.assertEqual(r.json["code"], code)
        self.assertEqual(r.json.get("reason", ""), reason)
        if message is not None:
            self.assertEqual(r.json["message"], message)
        return r.json


# ---------------------------------------------------------------------------


class TestAuthAndDiscovery(Base):
    def test_missing_or_bad_token_is_401_status(self):
        for token in (None, "wrong"):
            r = call("GET", "/api/v1/namespaces", token=token)
            self.assertStatus(r, 401, "Unauthorized", "Unauthorized")

    def test_client_certificate_authenticates_as_cn(self):
        ctx = ssl.create_default_context(cafile=os.path.join(SERVER["tmp"], "ca.crt"))
        ctx.load_cert_chain(os.path.join(SERVER["tmp"], "client.crt"), os.path.join(SERVER["tmp"], "client.key"))
        r = call("GET", "/api/v1/namespaces", token=None, ctx=ctx)
        self.assertEqual(r.status, 200, r)
        last = control("GET", "requests")["items"][-1]
        self.assertEqual(last["user"], "runbook-test")

    def test_client_certificate_from_other_ca_is_refused(self):
        ctx = ssl.create_default_context(cafile=os.path.join(SERVER["tmp"], "ca.crt"))
        ctx.load_cert_chain(os.path.join(SERVER["tmp"], "other-client.crt"),
                            os.path.join(SERVER["tmp"], "other-client.key"))
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            call("GET", "/api/v1/namespaces", token=None, ctx=ctx)

    def test_server_certificate_is_not_trusted_by_other_ca(self):
        ctx = ssl.create_default_context(cafile=os.path.join(SERVER["tmp"], "other-ca.crt"))
        with self.assertRaises(ssl.SSLCertVerificationError):
            call("GET", "/version", ctx=ctx)

    def test_forbid_gives_rbac_style_403(self):
        ok("POST", NS, ns_obj("locked"))
        ok("POST", NS + "/locked/secrets", secret("x"))
        r = call("GET", NS + "/locked/secrets/x", token="other-token")
        body = self.assertStatus(r, 403, "Forbidden",
                                 'secrets "x" is forbidden: User "alice" cannot get resource "secrets" in API '
                                 'group "" in the namespace "locked"')
        self.assertEqual(body["details"], {"name": "x", "kind": "secrets"})
        self.assertEqual(call("GET", NS + "/demo/secrets", token="other-token").status, 200)
        control("POST", "forbid", {"user": "alice", "verb": "list", "resource": "deployments"})
        r = call("GET", "/apis/apps/v1/deployments", token="other-token")
        self.assertStatus(r, 403, "Forbidden", 'deployments.apps is forbidden: User "alice" cannot list resource '
                          '"deployments" in API group "apps" at the cluster scope')

    def test_version_and_group_discovery(self):
        v = ok("GET", "/version")
        self.assertEqual(v["major"], "1")
        self.assertEqual(v["gitVersion"], "v1.%s.9" % v["minor"])
        api = ok("GET", "/api")
        self.assertEqual(api["kind"], "APIVersions")
        self.assertEqual(api["versions"], ["v1"])
        groups = {g["name"]: g for g in ok("GET", "/apis")["groups"]}
        for name in ("apps", "batch", "networking.k8s.io", "apiextensions.k8s.io"):
            self.assertIn(name, groups)
        self.assertEqual(groups["apps"]["preferredVersion"], {"groupVersion": "apps/v1", "version": "v1"})

    def test_resource_lists(self):
        core = {r["name"]: r for r in ok("GET", "/api/v1")["resources"]}
        for name in ("namespaces", "secrets", "configmaps", "services", "pods", "pods/log",
                     "persistentvolumeclaims", "serviceaccounts", "events"):
            self.assertIn(name, core)
        self.assertFalse(core["namespaces"]["namespaced"])
        self.assertEqual(core["pods/log"], {"name": "pods/log", "singularName": "", "namespaced": True,
                                            "kind": "Pod", "verbs": ["get"]})
        self.assertEqual(core["secrets"]["kind"], "Secret")
        apps = {r["name"]: r for r in ok("GET", "/apis/apps/v1")["resources"]}
        self.assertEqual(apps["deployments"]["shortNames"], ["deploy"])
        self.assertEqual((apps["deployments/scale"]["group"], apps["deployments/scale"]["kind"]), ("autoscaling", "Scale"))
        self.assertIn("statefulsets/status", apps)
        self.assertIn("replicasets/scale", apps)
        batch = {r["name"] for r in ok("GET", "/apis/batch/v1")["resources"]}
        self.assertTrue({"jobs", "cronjobs", "jobs/status"} <= batch)

    def test_openapi_v3_stub_advertises_field_validation(self):
        index = ok("GET", "/openapi/v3")["paths"]
        url = index["apis/apps/v1"]["serverRelativeURL"]
        self.assertTrue(url.startswith("/openapi/v3/apis/apps/v1?hash="))
        doc = ok("GET", url)
        op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
        self.assertEqual(op["x-kubernetes-group-version-kind"], {"group": "apps", "version": "v1", "kind": "Deployment"})
        self.assertIn({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}, op["parameters"])
        self.assertIn("/api/v1/namespaces/{name}", ok("GET", "/openapi/v3/api/v1")["paths"])
        self.assertEqual(call("GET", "/openapi/v2").status, 404)

    def test_unknown_paths_are_404_status(self):
        self.assertStatus(call("GET", "/apis/apps/v1/namespaces/demo/gizmos"), 404, "NotFound",
                          "the server could not find the requested resource")
        self.assertStatus(call("GET", "/apis/nope/v1"), 404, "NotFound")

    def test_expect_continue_and_chunked_request_bodies(self):
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                           "data": {"k": "x" * 200000}})
        r = call("POST", NS + "/demo/configmaps", body, headers={"Expect": "100-continue"})
        self.assertEqual(r.status, 201, r)
        conn = connect()
        conn.request("POST", NS + "/demo/configmaps", body=iter([b'{"apiVersion":"v1","kind":"ConfigMap",',
                                                                 b'"metadata":{"name":"chunked"}}']),
                     headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
                     encode_chunked=True)
        first = conn.getresponse()
        self.assertEqual((first.status, json.loads(first.read())["metadata"]["name"]), (201, "chunked"))
        conn.request("GET", NS + "/demo/configmaps/chunked", headers={"Authorization": "Bearer " + TOKEN})
        second = conn.getresponse()  # same connection: keep-alive
        self.assertEqual((second.status, json.loads(second.read())["metadata"]["name"]), (200, "chunked"))
        conn.close()

    def test_method_not_allowed(self):
        r = call("POST", NS + "/demo/secrets/x", secret("x"))
        self.assertStatus(r, 405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


class TestCrud(Base):
    def test_create_fills_system_metadata(self):
        r = call("POST", NS + "/demo/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "cfg"}, "data": {"a": "1"}})
        self.assertEqual(r.status, 201)
        meta = r.json["metadata"]
        self.assertRegex(meta["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(meta["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertTrue(meta["resourceVersion"].isdigit())
        self.assertNotIn("generation", meta)
        self.assertEqual(r.json["kind"], "ConfigMap")
        got = ok("GET", NS + "/demo/configmaps/cfg")
        self.assertEqual(got, r.json)

    def test_already_exists(self):
        ok("POST", NS + "/demo/secrets", secret("s"))
        body = self.assertStatus(call("POST", NS + "/demo/secrets", secret("s")), 409, "AlreadyExists",
                                 'secrets "s" already exists')
        self.assertEqual(body["details"], {"name": "s", "kind": "secrets"})

    def test_not_found_names_the_plural_resource(self):
        body = self.assertStatus(call("GET", "/apis/apps/v1/namespaces/demo/deployments/nope"), 404, "NotFound",
                                 'deployments.apps "nope" not found')
        self.assertEqual(body["details"], {"name": "nope", "group": "apps", "kind": "deployments"})

    def test_create_in_missing_namespace(self):
        self.assertStatus(call("POST", NS + "/ghost/secrets", secret("s")), 404, "NotFound",
                          'namespaces "ghost" not found')

    def test_namespace_mismatch_is_bad_request(self):
        obj = secret("s")
        obj["metadata"]["namespace"] = "other"
        self.assertStatus(call("POST", NS + "/demo/secrets", obj), 400, "BadRequest",
                          "the namespace of the provided object does not match the namespace sent on the request")

    def test_resource_version_on_create_is_rejected(self):
        obj = secret("s")
        obj["metadata"]["resourceVersion"] = "5"
        r = call("POST", NS + "/demo/secrets", obj)
        self.assertStatus(r, 500, "", "resourceVersion should not be set on objects to be created")

    def test_invalid_name_and_missing_name(self):
        body = self.assertStatus(call("POST", NS + "/demo/secrets", secret("Bad_Name")), 422, "Invalid")
        self.assertTrue(body["message"].startswith('Secret "Bad_Name" is invalid: metadata.name: Invalid value: '
                                                   '"Bad_Name": a lowercase RFC 1123 subdomain'))
        self.assertEqual(body["details"]["kind"], "Secret")
        self.assertEqual(body["details"]["causes"][0]["reason"], "FieldValueInvalid")
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.name")
        body = self.assertStatus(call("POST", NS + "/demo/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                                    "metadata": {}}), 422, "Invalid")
        self.assertEqual(body["message"], 'Secret "" is invalid: metadata.name: Required value: name or '
                                          'generateName is required')

    def test_generate_name(self):
        obj = ok("POST", NS + "/demo/secrets", {"apiVersion": "v1", "kind": "Secret",
                                               "metadata": {"generateName": "tok-"}})
        self.assertRegex(obj["metadata"]["name"], r"^tok-[a-z0-9]{5}$")

    def test_deployment_validation_causes(self):
        d = deployment()
        d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
        d["spec"]["template"]["spec"]["containers"][0].pop("image")
        body = self.assertStatus(call("POST", "/apis/apps/v1/namespaces/demo/deployments", d), 422, "Invalid")
        self.assertEqual(body["details"]["group"], "apps")
        self.assertEqual(body["details"]["kind"], "Deployment")
        fields = [c["field"] for c in body["details"]["causes"]]
        self.assertEqual(fields, ["spec.template.metadata.labels", "spec.template.spec.containers[0].image"])
        self.assertTrue(body["message"].startswith('Deployment.apps "web" is invalid: [spec.template.metadata.labels'))

    def test_put_conflict_unconditional_and_missing(self):
        s = ok("POST", NS + "/demo/secrets", secret("s", {"a": "YQ=="}))
        stale = json.loads(json.dumps(s))
        s["data"]["b"] = "Yg=="
        s2 = ok("PUT", NS + "/demo/secrets/s", s)
        self.assertNotEqual(s2["metadata"]["resourceVersion"], s["metadata"]["resourceVersion"])
        stale["data"]["c"] = "Yw=="
        body = self.assertStatus(call("PUT", NS + "/demo/secrets/s", stale), 409, "Conflict",
                                 'Operation cannot be fulfilled on secrets "s": the object has been modified; '
                                 'please apply your changes to the latest version and try again')
        self.assertEqual(body["details"], {"name": "s", "kind": "secrets"})
        del stale["metadata"]["resourceVersion"]
        s3 = ok("PUT", NS + "/demo/secrets/s", stale)  # empty resourceVersion: unconditional
        self.assertEqual(s3["data"], {"a": "YQ==", "c": "Yw=="})
        self.assertStatus(call("PUT", NS + "/demo/secrets/ghost", secret("ghost")), 404, "NotFound",
                          'secrets "ghost" not found')

    def test_noop_put_keeps_resource_version(self):
        s = ok("POST", NS + "/demo/secrets", secret("s", {"a": "YQ=="}))
        s2 = ok("PUT", NS + "/demo/secrets/s", s)
        self.assertEqual(s2["metadata"]["resourceVersion"], s["metadata"]["resourceVersion"])

    def test_status_is_preserved_on_update_and_written_via_status(self):
        control("POST", "config", {"controllers": False})
        d = ok("POST", "/apis/apps/v1/namespaces/demo/deployments", deployment())
        self.assertEqual(d["metadata"]["generation"], 1)
        d["status"] = {"replicas": 9}
        d2 = ok("PUT", "/apis/apps/v1/namespaces/demo/deployments/web", d)
        self.assertNotIn("status", d2)
        self.assertEqual(d2["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"])
        d3 = ok("PUT", "/apis/apps/v1/namespaces/demo/deployments/web/status", d)
        self.assertEqual(d3["status"], {"replicas": 9})
        self.assertEqual(d3["metadata"]["generation"], 1)
        self.assertNotEqual(d3["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"])
        d3["spec"]["replicas"] = 5
        d3["status"] = {"replicas": 1}
        d4 = ok("PUT", "/apis/apps/v1/namespaces/demo/deployments/web/status", d3)
        self.assertEqual((d4["spec"]["replicas"], d4["status"]["replicas"]), (2, 1))

    def test_generation_rules(self):
        control("POST", "config", {"controllers": False})
        base = "/apis/apps/v1/namespaces/demo/deployments/web"
        ok("POST", "/apis/apps/v1/namespaces/demo/deployments", deployment())
        mp = "application/merge-patch+json"
        self.assertEqual(ok("PATCH", base, {"spec": {"replicas": 3}}, ctype=mp)["metadata"]["generation"], 2)
        self.assertEqual(ok("PATCH", base, {"metadata": {"annotations": {"a": "b"}}}, ctype=mp)["metadata"]["generation"], 3)
        self.assertEqual(ok("PATCH", base, {"metadata": {"labels": {"a": "b"}}}, ctype=mp)["metadata"]["generation"], 3)
        self.assertEqual(ok("PATCH", base + "/status", {"status": {"replicas": 3}}, ctype=mp)["metadata"]["generation"], 3)
        sts = deployment("db")
        sts["kind"] = "StatefulSet"
        ok("POST", "/apis/apps/v1/namespaces/demo/statefulsets", sts)
        g = ok("PATCH", "/apis/apps/v1/namespaces/demo/statefulsets/db", {"metadata": {"annotations": {"a": "b"}}},
               ctype=mp)["metadata"]["generation"]
        self.assertEqual(g, 1)  # StatefulSets count spec changes only
        cm = ok("POST", NS + "/demo/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        self.assertNotIn("generation", cm["metadata"])

    def test_secret_defaults_and_string_data(self):
        s = ok("POST", NS + "/demo/secrets", secret("s", {"a": "YQ=="}, stringData={"b": "hello", "a": "over"}))
        self.assertEqual(s["type"], "Opaque")
        self.assertNotIn("stringData", s)
        self.assertEqual(s["data"], {"a": base64.b64encode(b"over").decode(), "b": base64.b64encode(b"hello").decode()})
        body = self.assertStatus(call("POST", NS + "/demo/secrets", secret("t", {"bad key!": "YQ=="})), 422, "Invalid")
        self.assertEqual(body["details"]["causes"][0]["field"], "data[bad key!]")
        self.assertIn("a valid config key must consist of alphanumeric characters", body["message"])
        self.assertStatus(call("POST", NS + "/demo/secrets", secret("u", {"a": "not base64!"})), 400, "BadRequest")

    def test_immutable_secret(self):
        ok("POST", NS + "/demo/secrets", secret("s", {"a": "YQ=="}, immutable=True))
        r = call("PATCH", NS + "/demo/secrets/s", {"data": {"a": "Yg=="}}, ctype="application/merge-patch+json")
        body = self.assertStatus(r, 422, "Invalid")
        self.assertEqual(body["details"]["causes"][0]["message"], "Forbidden: field is immutable when `immutable` is set")

    def test_namespace_defaults(self):
        ns = ok("GET", NS + "/demo")
        self.assertEqual(ns["status"], {"phase": "Active"})
        self.assertEqual(ns["spec"], {"finalizers": ["kubernetes"]})
        self.assertEqual(ns["metadata"]["labels"], {"kubernetes.io/metadata.name": "demo"})

    def test_workload_defaults(self):
        control("POST", "config", {"controllers": False})
        d = ok("POST", "/apis/apps/v1/namespaces/demo/deployments", deployment())
        self.assertEqual(d["spec"]["strategy"], {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        self.assertEqual(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent")
        sts = deployment("db")
        sts["kind"] = "StatefulSet"
        s = ok("POST", "/apis/apps/v1/namespaces/demo/statefulsets", sts)
        self.assertEqual(s["spec"]["updateStrategy"], {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        ds = deployment("agent")
        ds["kind"] = "DaemonSet"
        ds["spec"].pop("replicas")
        d = ok("POST", "/apis/apps/v1/namespaces/demo/daemonsets", ds)
        self.assertEqual(d["spec"]["updateStrategy"]["type"], "RollingUpdate")
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                                              "containers": [{"name": "c", "image": "busybox"}]}}}}
        j = ok("POST", "/apis/batch/v1/namespaces/demo/jobs", job)
        uid = j["metadata"]["uid"]
        self.assertEqual(j["spec"]["selector"], {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        self.assertEqual(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j")
        self.assertEqual((j["spec"]["backoffLimit"], j["spec"]["completions"]), (6, 1))
        job["metadata"]["name"] = "bad"
        job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
        body = self.assertStatus(call("POST", "/apis/batch/v1/namespaces/demo/jobs", job), 422, "Invalid")
        self.assertIn('spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: '
                      '"OnFailure", "Never"', body["message"])

    def test_dry_run(self):
        r = call("POST", NS + "/demo/secrets?dryRun=All", secret("s"))
        self.assertEqual(r.status, 201)
        self.assertIn("uid", r.json["metadata"])
        self.assertIn("creationTimestamp", r.json["metadata"])
        self.assertNotIn("resourceVersion", r.json["metadata"])
        self.assertEqual(call("GET", NS + "/demo/secrets/s").status, 404)
        s = ok("POST", NS + "/demo/secrets", secret("s", {"a": "YQ=="}))
        p = ok("PATCH", NS + "/demo/secrets/s?dryRun=All", {"data": {"a": "Yg=="}},
               ctype="application/merge-patch+json")
        self.assertEqual(p["data"]["a"], "Yg==")
        self.assertEqual(ok("GET", NS + "/demo/secrets/s"), s)
        ok("DELETE", NS + "/demo/secrets/s?dryRun=All")
        self.assertEqual(ok("GET", NS + "/demo/secrets/s"), s)
        body = self.assertStatus(call("POST", NS + "/demo/secrets?dryRun=Yes", secret("z")), 422, "Invalid")
        self.assertEqual(body["message"], 'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
                                          '["Yes"]: supported values: "All"')
        self.assertEqual(ok("GET", NS + "/demo/secrets/s"), s)

    def test_field_manager_recorded(self):
        s = ok("POST", NS + "/demo/secrets?fieldManager=runbook", secret("s", {"a": "YQ=="}))
        mf = s["metadata"]["managedFields"]
        self.assertEqual(len(mf), 1)
        self.assertEqual({k: mf[0][k] for k in ("manager", "operation", "apiVersion", "fieldsType")},
                         {"manager": "runbook", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1"})
        self.assertEqual(mf[0]["fieldsV1"], {"f:data": {".": {}, "f:a": {}}, "f:type": {}})
        s = ok("PATCH", NS + "/demo/secrets/s", {"data": {"b": "Yg=="}}, ctype="application/merge-patch+json",
               headers={"User-Agent": "curl/8.0"})
        self.assertEqual([m["manager"] for m in s["metadata"]["managedFields"]], ["runbook", "curl"])

    def test_strict_field_validation(self):
        obj = secret("s")
        obj["bogus"] = 1
        r = call("POST", NS + "/demo/secrets?fieldValidation=Strict", obj)
        self.assertStatus(r, 400, "BadRequest", 'Secret in version "v1" cannot be handled as a Secret: strict '
                                                'decoding error: unknown field "bogus"')
        r = call("POST", NS + "/demo/secrets", obj)
        self.assertEqual(r.status, 201)
        self.assertEqual(r.headers["Warning"], '299 - "unknown field \\"bogus\\""')
        self.assertNotIn("bogus", r.json)


class TestList(Base):
    def seed(self):
        for i, (tier, env) in enumerate([("web", "prod"), ("web", "dev"), ("db", "prod"), ("cache", None)]):
            labels = {"tier": tier}
            if env:
                labels["env"] = env
            ok("POST", NS + "/demo/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "cm%d" % i, "labels": labels}})

    def names(self, query):
        return [i["metadata"]["name"] for i in ok("GET", NS + "/demo/configmaps?" + query)["items"]]

    def test_list_shape(self):
        self.seed()
        lst = ok("GET", NS + "/demo/configmaps")
        self.assertEqual((lst["kind"], lst["apiVersion"]), ("ConfigMapList", "v1"))
        self.assertTrue(lst["metadata"]["resourceVersion"].isdigit())
        self.assertEqual(len(lst["items"]), 4)
        for item in lst["items"]:
            self.assertNotIn("kind", item)
            self.assertNotIn("apiVersion", item)

    def test_pagination(self):
        self.seed()
        first = ok("GET", NS + "/demo/configmaps?limit=3")
        self.assertEqual([i["metadata"]["name"] for i in first["items"]], ["cm0", "cm1", "cm2"])
        self.assertEqual(first["metadata"]["remainingItemCount"], 1)
        token = first["metadata"]["continue"]
        second = ok("GET", NS + "/demo/configmaps?limit=3&continue=" + token)
        self.assertEqual([i["metadata"]["name"] for i in second["items"]], ["cm3"])
        self.assertNotIn("continue", second["metadata"])
        self.assertEqual(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"])
        self.assertStatus(call("GET", NS + "/demo/configmaps?limit=1&continue=garbage"), 400, "BadRequest")
        ok("POST", NS + "/demo/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}})
        control("POST", "compact")
        self.assertStatus(call("GET", NS + "/demo/configmaps?limit=3&continue=" + token), 410, "Expired")

    def test_label_selectors(self):
        self.seed()
        self.assertEqual(self.names("labelSelector=tier%3Dweb"), ["cm0", "cm1"])
        self.assertEqual(self.names("labelSelector=tier%3D%3Dweb,env%3Dprod"), ["cm0"])
        self.assertEqual(self.names("labelSelector=tier!%3Dweb"), ["cm2", "cm3"])
        self.assertEqual(self.names("labelSelector=tier+in+(db,cache)"), ["cm2", "cm3"])
        self.assertEqual(self.names("labelSelector=tier+notin+(web),env"), ["cm2"])
        self.assertEqual(self.names("labelSelector=!env"), ["cm3"])
        self.assertEqual(call("GET", NS + "/demo/configmaps?labelSelector=a%3D%3D%3Db").status, 400)

    def test_field_selectors(self):
        self.seed()
        self.assertEqual(self.names("fieldSelector=metadata.name%3Dcm2"), ["cm2"])
        self.assertEqual(self.names("fieldSelector=metadata.name!%3Dcm2"), ["cm0", "cm1", "cm3"])
        self.assertEqual(self.names("fieldSelector=metadata.namespace%3Ddemo,metadata.name%3Dcm1"), ["cm1"])
        self.assertStatus(call("GET", NS + "/demo/configmaps?fieldSelector=spec.x%3Dy"), 400, "BadRequest",
                          "field label not supported: spec.x")

    def test_pod_phase_field_selector(self):
        control("POST", "config", {"controllers": False})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        ok("POST", NS + "/demo/pods", pod)
        lst = ok("GET", NS + "/demo/pods?fieldSelector=status.phase%3DPending")
        self.assertEqual(len(lst["items"]), 1)
        self.assertEqual(ok("GET", NS + "/demo/pods?fieldSelector=status.phase%3DRunning")["items"], [])

    def test_cluster_wide_list(self):
        ok("POST", NS, ns_obj("other"))
        ok("POST", NS + "/demo/secrets", secret("a"))
        ok("POST", NS + "/other/secrets", secret("b"))
        lst = ok("GET", "/api/v1/secrets")
        self.assertEqual([(i["metadata"]["namespace"], i["metadata"]["name"]) for i in lst["items"]],
                         [("demo", "a"), ("other", "b")])
        self.assertEqual(ok("GET", NS + "/nowhere/secrets")["items"], [])

    def test_delete_collection(self):
        self.seed()
        lst = ok("DELETE", NS + "/demo/configmaps?labelSelector=tier%3Dweb")
        self.assertEqual(lst["kind"], "ConfigMapList")
        self.assertEqual([i["metadata"]["name"] for i in lst["items"]], ["cm0", "cm1"])
        self.assertEqual(self.names(""), ["cm2", "cm3"])


class TestPatch(Base):
    path = NS + "/demo/configmaps/c"

    def setUp(self):
        super().setUp()
        self.cm = ok("POST", NS + "/demo/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "c", "labels": {"a": "1"}},
                                                      "data": {"x": "1", "y": "2"}})

    def test_merge_patch(self):
        r = ok("PATCH", self.path, {"data": {"x": None, "z": "3"}, "metadata": {"labels": {"b": "2"}}},
               ctype="application/merge-patch+json")
        self.assertEqual(r["data"], {"y": "2", "z": "3"})
        self.assertEqual(r["metadata"]["labels"], {"a": "1", "b": "2"})

    def test_json_patch_ops(self):
        ops = [{"op": "add", "path": "/data/z", "value": "3"},
               {"op": "replace", "path": "/data/x", "value": "10"},
               {"op": "remove", "path": "/data/y"},
               {"op": "copy", "from": "/data/z", "path": "/data/w"},
               {"op": "move", "from": "/data/w", "path": "/data/v"},
               {"op": "test", "path": "/data/x", "value": "10"},
               {"op": "add", "path": "/metadata/labels/k8s.io~1name", "value": "n"}]
        r = ok("PATCH", self.path, ops, ctype="application/json-patch+json")
        self.assertEqual(r["data"], {"x": "10", "z": "3", "v": "3"})
        self.assertEqual(r["metadata"]["labels"]["k8s.io/name"], "n")

    def test_json_patch_failures(self):
        r = call("PATCH", self.path, [{"op": "test", "path": "/data/x", "value": "nope"}],
                 ctype="application/json-patch+json")
        self.assertStatus(r, 422, "Invalid", "the server rejected our request due to an error in our request")
        r = call("PATCH", self.path, [{"op": "remove", "path": "/data/missing"}], ctype="application/json-patch+json")
        self.assertEqual(r.status, 422)
        r = call("PATCH", self.path, {"op": "add"}, ctype="application/json-patch+json")
        self.assertStatus(r, 400, "BadRequest")
        self.assertEqual(ok("GET", self.path)["data"], {"x": "1", "y": "2"})

    def test_strategic_merge_patch_lists(self):
        control("POST", "config", {"controllers": False})
        d = deployment()
        d["spec"]["template"]["spec"]["containers"] = [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "envoy:1"}]
        ok("POST", "/apis/apps/v1/namespaces/demo/deployments", d)
        smp = "application/strategic-merge-patch+json"
        r = ok("PATCH", "/apis/apps/v1/namespaces/demo/deployments/web", {"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]},
            {"name": "side", "$patch": "delete"}]}}}}, ctype=smp)
        containers = r["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in containers], ["web"])
        self.assertEqual(containers[0]["image"], "nginx:2")
        self.assertEqual(containers[0]["env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "20"},
                                                {"name": "C", "value": "3"}])
        r = ok("PATCH", "/apis/apps/v1/namespaces/demo/deployments/web", {"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "busybox"}]}}}}, ctype=smp)
        self.assertEqual([c["name"] for c in r["spec"]["template"]["spec"]["containers"]], ["only"])
        r = ok("PATCH", "/apis/apps/v1/namespaces/demo/deployments/web",
               {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}, ctype=smp)
        self.assertEqual(r["spec"]["strategy"], {"type": "Recreate"})

    def test_unknown_content_type_is_415(self):
        r = call("PATCH", self.path, {"data": {}}, ctype="application/x-whatever")
        self.assertStatus(r, 415, "UnsupportedMediaType",
                          "the body of the request was in an unknown format - accepted media types include: "
                          "application/json-patch+json, application/merge-patch+json, "
                          "application/strategic-merge-patch+json, application/apply-patch+yaml")

    def test_resource_version_precondition(self):
        r = call("PATCH", self.path, {"metadata": {"resourceVersion": "1"}, "data": {"x": "9"}},
                 ctype="application/merge-patch+json")
        self.assertStatus(r, 409, "Conflict")
        rv = self.cm["metadata"]["resourceVersion"]
        r = ok("PATCH", self.path, {"metadata": {"resourceVersion": rv}, "data": {"x": "9"}},
               ctype="application/merge-patch+json")
        self.assertEqual(r["data"]["x"], "9")

    def test_force_only_for_apply(self):
        r = call("PATCH", self.path + "?force=true", {"data": {}}, ctype="application/merge-patch+json")
        self.assertStatus(r, 422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be '
                                             'specified for non-apply patch')

    def test_noop_patch_keeps_resource_version(self):
        r = ok("PATCH", self.path, {"data": {"x": "1"}}, ctype="application/merge-patch+json")
        self.assertEqual(r["metadata"]["resourceVersion"], self.cm["metadata"]["resourceVersion"])
        r = ok("PATCH", self.path, {}, ctype="application/strategic-merge-patch+json")
        self.assertEqual(r["metadata"]["resourceVersion"], self.cm["metadata"]["resourceVersion"])

    def test_patch_missing_is_404(self):
        r = call("PATCH", NS + "/demo/configmaps/ghost", {"data": {}}, ctype="application/merge-patch+json")
        self.assertStatus(r, 404, "NotFound", 'configmaps "ghost" not found')


APPLY = "application/apply-patch+yaml"
DEP = "/apis/apps/v1/namespaces/demo/deployments/web"


class TestApply(Base):
    def setUp(self):
        super().setUp()
        control("POST", "config", {"controllers": False})

    def apply(self, obj, manager="kubectl", force=None, path=DEP):
        q = "?fieldManager=%s" % manager + ("&force=%s" % force if force is not None else "")
        return call("PATCH", path + q, obj, ctype=APPLY)

    def test_field_manager_required(self):
        r = call("PATCH", DEP, deployment(), ctype=APPLY)
        self.assertStatus(r, 422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                             'is required for apply patch')

    def test_create_then_unchanged(self):
        r = self.apply(deployment())
        self.assertEqual(r.status, 201, r)
        rv = r.json["metadata"]["resourceVersion"]
        mf = r.json["metadata"]["managedFields"]
        self.assertEqual([(m["manager"], m["operation"]) for m in mf], [("kubectl", "Apply")])
        self.assertIn("f:replicas", mf[0]["fieldsV1"]["f:spec"])
        self.assertIn('k:{"name":"web"}', mf[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"])
        r = self.apply(deployment(), force="false")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json["metadata"]["resourceVersion"], rv)

    def test_conflict_force_and_shared_ownership(self):
        self.apply(deployment(replicas=2))
        r = self.apply(deployment(replicas=5), manager="ops")
        body = self.assertStatus(r, 409, "Conflict",
                                 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas')
        self.assertEqual(body["details"]["causes"], [{"reason": "FieldManagerConflict",
                                                      "message": 'conflict with "kubectl"', "field": ".spec.replicas"}])
        r = self.apply(deployment(replicas=5, image="nginx:2"), manager="ops")
        self.assertEqual(r.status, 409)
        self.assertTrue(r.json["message"].startswith("Apply failed with 2 conflicts: conflicts with \"kubectl\":\n"
                                                     "- .spec.replicas\n- .spec.template.spec.containers"))
        r = self.apply(deployment(replicas=5), manager="ops", force="true")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["spec"]["replicas"], 5)
        owners = {m["manager"]: m["fieldsV1"] for m in r.json["metadata"]["managedFields"]}
        self.assertNotIn("f:replicas", owners["kubectl"]["f:spec"])
        self.assertIn("f:replicas", owners["ops"]["f:spec"])
        # ops also applied the same image: it co-owns it; kubectl dropping it keeps it.
        mine = deployment(replicas=5)
        del mine["spec"]["replicas"]
        mine["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
        r = self.apply(mine)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.27")

    def test_omitted_fields_are_removed(self):
        d = deployment()
        d["metadata"]["labels"] = {"team": "a", "tier": "web"}
        self.apply(d)
        d["metadata"]["labels"] = {"team": "a"}
        r = self.apply(d)
        self.assertEqual(r.json["metadata"]["labels"], {"team": "a"})
        d["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "envoy"})
        r = self.apply(d)
        self.assertEqual(len(r.json["spec"]["template"]["spec"]["containers"]), 2)
        d["spec"]["template"]["spec"]["containers"].pop()
        r = self.apply(d)
        self.assertEqual([c["name"] for c in r.json["spec"]["template"]["spec"]["containers"]], ["web"])

    def test_conflict_with_an_update_manager_names_version_and_time(self):
        self.apply(deployment())
        ok("PATCH", DEP + "?fieldManager=kubectl-edit", {"spec": {"replicas": 7}},
           ctype="application/merge-patch+json")
        r = self.apply(deployment(replicas=2))
        self.assertEqual(r.status, 409)
        self.assertRegex(r.json["message"], r'^Apply failed with 1 conflict: conflict with "kubectl-edit" using '
                                            r'apps/v1 at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: \.spec\.replicas$')

    def test_apply_secret_and_status_preserved(self):
        path = NS + "/demo/secrets/s"
        r = self.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                        "stringData": {"k": "v"}}, path=path)
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json["data"], {"k": "dg=="})
        r2 = self.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                         "stringData": {"k": "v"}}, path=path)
        self.assertEqual(r2.json["metadata"]["resourceVersion"], r.json["metadata"]["resourceVersion"])

    def test_apply_name_mismatch_and_yaml(self):
        r = self.apply(deployment("other"))
        self.assertStatus(r, 400, "BadRequest",
                          "the name of the object (other) does not match the name on the URL (web)")
        r = call("PATCH", DEP + "?fieldManager=x", "kind: Deployment\n", ctype=APPLY)
        self.assertEqual(r.status, 415)


class TestDelete(Base):
    def test_delete_returns_success_status(self):
        s = ok("POST", NS + "/demo/secrets", secret("s"))
        r = call("DELETE", NS + "/demo/secrets/s", {"propagationPolicy": "Background"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": "s", "kind": "secrets", "uid": s["metadata"]["uid"]}})
        self.assertStatus(call("DELETE", NS + "/demo/secrets/s"), 404, "NotFound")

    def test_pod_delete_returns_the_object(self):
        control("POST", "config", {"controllers": False})
        ok("POST", NS + "/demo/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        r = ok("DELETE", NS + "/demo/pods/p")
        self.assertEqual((r["kind"], r["metadata"]["name"]), ("Pod", "p"))

    def test_preconditions_and_bad_options(self):
        ok("POST", NS + "/demo/secrets", secret("s"))
        r = call("DELETE", NS + "/demo/secrets/s", {"preconditions": {"uid": "nope"}})
        self.assertStatus(r, 409, "Conflict")
        self.assertIn("Precondition failed: UID in precondition: nope", r.json["message"])
        r = call("DELETE", NS + "/demo/secrets/s?propagationPolicy=Sideways")
        body = self.assertStatus(r, 422, "Invalid")
        self.assertEqual(body["message"], 'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                          'value: "Sideways": supported values: "Foreground", "Background", '
                                          '"Orphan", "nil"')

    def test_foreground_deletion(self):
        control("POST", "config", {"controllers": ["Deployment", "ReplicaSet"]})
        ok("POST", "/apis/apps/v1/namespaces/demo/deployments", deployment(replicas=1))
        wait_for(lambda: ok("GET", "/apis/apps/v1/namespaces/demo/replicasets")["items"])
        r = ok("DELETE", DEP, {"propagationPolicy": "Foreground"})
        self.assertIn("foregroundDeletion", r["metadata"]["finalizers"])
        self.assertIn("deletionTimestamp", r["metadata"])
        wait_for(lambda: call("GET", DEP).status == 404)
        self.assertEqual(ok("GET", "/apis/apps/v1/namespaces/demo/replicasets")["items"], [])

    def test_namespace_termination(self):
        ok("POST", NS + "/demo/secrets", secret("s"))
        r = ok("DELETE", NS + "/demo")
        self.assertEqual(r["status"]["phase"], "Terminating")
        self.assertIn("deletionTimestamp", r["metadata"])
        r = call("POST", NS + "/demo/secrets", secret("t"))
        if r.status != 404:  # the namespace may already be gone
            body = self.assertStatus(r, 403, "Forbidden", 'secrets "t" is forbidden: unable to create new content '
                                                          'in namespace demo because it is being terminated')
            self.assertEqual(body["details"]["causes"][0]["reason"], "NamespaceTerminating")
        wait_for(lambda: call("GET", NS + "/demo").status == 404)
        self.assertEqual(ok("GET", "/api/v1/secrets")["items"], [])

    def job(self, name="j"):
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "c", "image": "busybox"}]}}}}

    def test_job_delete_background_removes_pods_default_orphans(self):
        control("POST", "config", {"controllers": ["Job"]})
        jobs = "/apis/batch/v1/namespaces/demo/jobs"
        for name in ("a", "b"):
            ok("POST", jobs, self.job(name))
        pods = lambda job: [p for p in ok("GET", NS + "/demo/pods?labelSelector=job-name%3D" + job)["items"]]
        wait_for(lambda: pods("a") and pods("b"))
        ok("DELETE", jobs + "/a", {"propagationPolicy": "Background"})
        self.assertEqual(pods("a"), [])
        ok("DELETE", jobs + "/b")  # batch/v1 Jobs orphan their pods by default
        left = pods("b")
        self.assertEqual(len(left), 1)
        self.assertNotIn("ownerReferences", left[0]["metadata"])


class TestWatch(Base):
    CM = NS + "/demo/configmaps"

    def cm(self, name, labels=None):
        return ok("POST", self.CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": name, "labels": labels or {}}})

    def test_watch_without_rv_sends_current_state_then_changes(self):
        self.cm("a")
        w = Watch(self.CM + "?watch=1&timeoutSeconds=5")
        try:
            self.assertEqual(w.resp.status, 200)
            self.assertEqual(w.resp.headers["Transfer-Encoding"], "chunked")
            self.assertEqual(w.resp.headers["Content-Type"], "application/json")
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "a"))
            self.assertEqual((ev["object"]["kind"], ev["object"]["apiVersion"]), ("ConfigMap", "v1"))
            b = self.cm("b")
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "b"))
            self.assertEqual(ev["object"]["metadata"]["resourceVersion"], b["metadata"]["resourceVersion"])
            ok("PATCH", self.CM + "/b", {"data": {"k": "v"}}, ctype="application/merge-patch+json")
            self.assertEqual(w.next()["type"], "MODIFIED")
            ok("DELETE", self.CM + "/b")
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "b"))
        finally:
            w.close()

    def test_watch_from_resource_version(self):
        a = self.cm("a")
        self.cm("b")
        w = Watch(self.CM + "?watch=true&resourceVersion=%s&timeoutSeconds=5" % a["metadata"]["resourceVersion"])
        try:
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "b"))
        finally:
            w.close()

    def test_too_old_resource_version_is_410_event(self):
        a = self.cm("a")
        self.cm("b")
        control("POST", "compact")
        w = Watch(self.CM + "?watch=1&resourceVersion=%s" % a["metadata"]["resourceVersion"])
        try:
            self.assertEqual(w.resp.status, 200)
            ev = w.next()
            self.assertEqual(ev["type"], "ERROR")
            obj = ev["object"]
            self.assertEqual((obj["kind"], obj["status"], obj["reason"], obj["code"]), ("Status", "Failure", "Expired", 410))
            self.assertRegex(obj["message"], r"^too old resource version: %s \(\d+\)$" % a["metadata"]["resourceVersion"])
            self.assertIsNone(w.next())  # the stream ends
        finally:
            w.close()

    def test_timeout_ends_stream_cleanly(self):
        t0 = time.time()
        w = Watch(self.CM + "?watch=1&timeoutSeconds=1&resourceVersion=0")
        try:
            self.assertIsNone(w.next())
            self.assertTrue(0.9 < time.time() - t0 < 3, time.time() - t0)
        finally:
            w.close()

    def test_bookmarks(self):
        w = Watch(self.CM + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=3")
        try:
            ev = w.next()
            self.assertEqual(ev["type"], "BOOKMARK")
            self.assertEqual(ev["object"]["kind"], "ConfigMap")
            self.assertTrue(ev["object"]["metadata"]["resourceVersion"].isdigit())
        finally:
            w.close()

    def test_send_initial_events(self):
        self.cm("a")
        self.cm("b")
        w = Watch(self.CM + "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                            "&allowWatchBookmarks=true&timeoutSeconds=3")
        try:
            evs = [w.next() for _ in range(3)]
            self.assertEqual([(e["type"], e["object"]["metadata"].get("name")) for e in evs],
                             [("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)])
            self.assertEqual(evs[2]["object"]["metadata"]["annotations"], {"k8s.io/initial-events-end": "true"})
        finally:
            w.close()
        control("POST", "config", {"watchlist": False})
        r = call("GET", self.CM + "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
        self.assertStatus(r, 422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                                             'sendInitialEvents is forbidden for watch unless the WatchList feature '
                                             'gate is enabled')
        r = call("GET", self.CM + "?watch=1&sendInitialEvents=true")
        self.assertEqual(r.status, 422)

    def test_selectors_filter_and_transition(self):
        self.cm("x", {"app": "web"})
        w = Watch(self.CM + "?watch=1&labelSelector=app%3Dweb&fieldSelector=metadata.name!%3Dskip&timeoutSeconds=5")
        try:
            self.assertEqual(w.next()["object"]["metadata"]["name"], "x")
            self.cm("skip", {"app": "web"})
            self.cm("other", {"app": "db"})
            ok("PATCH", self.CM + "/other", {"metadata": {"labels": {"app": "web"}}}, ctype="application/merge-patch+json")
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "other"))
            ok("PATCH", self.CM + "/x", {"metadata": {"labels": {"app": "db"}}}, ctype="application/merge-patch+json")
            ev = w.next()
            self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "x"))
        finally:
            w.close()

    def test_concurrent_writers_every_event_once_in_order(self):
        import threading
        w = Watch(self.CM + "?watch=1&resourceVersion=%s&timeoutSeconds=20" % ok("GET", self.CM)["metadata"]["resourceVersion"])
        errors = []

        def writer(n):
            try:
                for i in range(10):
                    ok("POST", self.CM, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w%d-%d" % (n, i)}})
                    ok("PATCH", self.CM + "/w%d-%d" % (n, i), {"data": {"i": str(i)}}, ctype="application/merge-patch+json")
            except AssertionError as e:
                errors.append(e)
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        try:
            events = [w.next() for _ in range(80)]
        finally:
            w.close()
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        self.assertEqual(rvs, sorted(set(rvs)))
        self.assertEqual(sum(1 for e in events if e["type"] == "ADDED"), 40)
        self.assertEqual(sum(1 for e in events if e["type"] == "MODIFIED"), 40)

    def test_watch_is_logged_as_watch(self):
        r = call("GET", self.CM + "?watch=1&timeoutSeconds=0")
        self.assertEqual(r.status, 200)
        entry = control("GET", "requests")["items"][-1]
        self.assertEqual((entry["watch"], entry["params"]["timeoutSeconds"], entry["status"]), (True, "0", 200))


class TestControllers(Base):
    DEPS = "/apis/apps/v1/namespaces/demo/deployments"

    def test_deployment_rolls_out_and_restarts(self):
        w = Watch(self.DEPS + "?watch=1&fieldSelector=metadata.name%3Dweb&timeoutSeconds=10")
        ok("POST", self.DEPS, deployment(replicas=2))
        try:
            done, seen = w.until(lambda e: (cond(e["object"], "Progressing") or {}).get("reason") == "NewReplicaSetAvailable")
        finally:
            w.close()
        self.assertIn("ReplicaSetUpdated", [(cond(e["object"], "Progressing") or {}).get("reason") for e in seen])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
        self.assertEqual(rvs, sorted(set(rvs)))  # each status write is a new version, one event each
        d = done["object"]
        st = d["status"]
        self.assertEqual((st["observedGeneration"], st["replicas"], st["updatedReplicas"], st["readyReplicas"],
                          st["availableReplicas"]), (1, 2, 2, 2, 2))
        self.assertEqual((cond(d, "Available")["status"], cond(d, "Available")["reason"]), ("True", "MinimumReplicasAvailable"))
        self.assertEqual(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1")
        self.assertEqual(d["metadata"]["generation"], 1)
        rs = ok("GET", "/apis/apps/v1/namespaces/demo/replicasets")["items"]
        self.assertEqual(len(rs), 1)
        self.assertEqual(rs[0]["metadata"]["ownerReferences"][0]["uid"], d["metadata"]["uid"])
        wait_for(lambda: len([p for p in ok("GET", NS + "/demo/pods?labelSelector=app%3Dweb")["items"]
                              if p["status"]["phase"] == "Running"]) == 2)
        # kubectl rollout restart's patch
        r = ok("PATCH", self.DEPS + "/web?fieldManager=kubectl-rollout", {"spec": {"template": {"metadata": {
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}},
               ctype="application/strategic-merge-patch+json")
        self.assertEqual(r["metadata"]["generation"], 2)
        d = wait_for(lambda: (lambda o: o if o["status"].get("observedGeneration") == 2 and
                              cond(o, "Progressing")["reason"] == "NewReplicaSetAvailable" else None)(ok("GET", self.DEPS + "/web")))
        self.assertEqual(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2")
        rs = {x["metadata"]["name"]: x["spec"]["replicas"] for x in ok("GET", "/apis/apps/v1/namespaces/demo/replicasets")["items"]}
        self.assertEqual(sorted(rs.values()), [0, 2])

    def test_paused_and_stuck(self):
        d = deployment("p")
        d["spec"]["paused"] = True
        ok("POST", self.DEPS, d)
        p = wait_for(lambda: cond(ok("GET", self.DEPS + "/p"), "Progressing") and ok("GET", self.DEPS + "/p"))
        self.assertEqual((cond(p, "Progressing")["status"], cond(p, "Progressing")["reason"]), ("Unknown", "DeploymentPaused"))
        control("POST", "stuck", {"kind": "Deployment", "namespace": "demo", "name": "s"})
        ok("POST", self.DEPS, deployment("s"))
        s = wait_for(lambda: (lambda o: o if cond(o, "Progressing") else None)(ok("GET", self.DEPS + "/s")))
        self.assertEqual((cond(s, "Progressing")["status"], cond(s, "Progressing")["reason"]),
                         ("False", "ProgressDeadlineExceeded"))
        settle()
        self.assertEqual(cond(ok("GET", self.DEPS + "/s"), "Progressing")["reason"], "ProgressDeadlineExceeded")

    def test_statefulset_daemonset_pvc(self):
        sts = deployment("db", replicas=2)
        sts["kind"] = "StatefulSet"
        sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        ok("POST", "/apis/apps/v1/namespaces/demo/statefulsets", sts)
        s = wait_for(lambda: (lambda o: o if o.get("status", {}).get("readyReplicas") == 2 else None)(
            ok("GET", "/apis/apps/v1/namespaces/demo/statefulsets/db")))
        st = s["status"]
        self.assertEqual((st["observedGeneration"], st["updatedReplicas"], st["currentReplicas"]), (1, 2, 2))
        self.assertEqual(st["currentRevision"], st["updateRevision"])
        self.assertEqual(ok("GET", NS + "/demo/pods/db-1")["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "db-1")
        pvc = wait_for(lambda: (lambda o: o if o["status"]["phase"] == "Bound" else None)(
            ok("GET", NS + "/demo/persistentvolumeclaims/data-db-0")))
        self.assertEqual(pvc["status"]["capacity"], {"storage": "1Gi"})
        ds = deployment("agent")
        ds["kind"] = "DaemonSet"
        ds["spec"].pop("replicas")
        ok("POST", "/apis/apps/v1/namespaces/demo/daemonsets", ds)
        d = wait_for(lambda: (lambda o: o if o.get("status", {}).get("numberAvailable") == 3 else None)(
            ok("GET", "/apis/apps/v1/namespaces/demo/daemonsets/agent")))
        self.assertEqual((d["status"]["desiredNumberScheduled"], d["status"]["updatedNumberScheduled"]), (3, 3))

    def job(self, name, logs=None):
        meta = {"annotations": {"fake.runbook.dev/logs": logs}} if logs else {}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"metadata": meta, "spec": {"restartPolicy": "Never",
                                                                 "containers": [{"name": "c", "image": "busybox"}]}}}}

    def test_job_completes(self):
        w = Watch("/apis/batch/v1/namespaces/demo/jobs?watch=1&timeoutSeconds=10")
        j = ok("POST", "/apis/batch/v1/namespaces/demo/jobs", self.job("backup", "one\ntwo"))
        try:
            done, seen = w.until(lambda e: cond(e["object"], "Complete") is not None)
        finally:
            w.close()
        types = [[c["type"] for c in e["object"].get("status", {}).get("conditions", [])] for e in seen]
        self.assertIn(["SuccessCriteriaMet"], types)
        self.assertEqual(types[-1], ["SuccessCriteriaMet", "Complete"])
        self.assertTrue(any(e["object"].get("status", {}).get("active") == 1 for e in seen))
        st = done["object"]["status"]
        self.assertEqual((st["succeeded"], st["active"]), (1, 0))
        self.assertIn("startTime", st)
        self.assertIn("completionTime", st)
        pods = ok("GET", NS + "/demo/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3Dbackup")["items"]
        self.assertEqual(len(pods), 1)
        pod = pods[0]
        labels = pod["metadata"]["labels"]
        self.assertEqual((labels["job-name"], labels["controller-uid"]), ("backup", j["metadata"]["uid"]))
        self.assertEqual(pod["metadata"]["ownerReferences"][0]["kind"], "Job")
        self.assertEqual(pod["status"]["phase"], "Succeeded")
        self.assertEqual(pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0)

    def test_job_fails(self):
        control("POST", "fail-job", {"namespace": "demo", "name": "bad"})
        ok("POST", "/apis/batch/v1/namespaces/demo/jobs", self.job("bad"))
        j = wait_for(lambda: (lambda o: o if cond(o, "Failed") else None)(ok("GET", "/apis/batch/v1/namespaces/demo/jobs/bad")))
        self.assertEqual([c["type"] for c in j["status"]["conditions"]], ["FailureTarget", "Failed"])
        self.assertEqual((cond(j, "Failed")["status"], cond(j, "Failed")["reason"]), ("True", "BackoffLimitExceeded"))
        self.assertEqual(j["status"]["failed"], 1)

    def test_fail_job_switch_is_cleared(self):
        control("POST", "fail-job", {"namespace": "demo"})
        control("DELETE", "fail-job")
        ok("POST", "/apis/batch/v1/namespaces/demo/jobs", self.job("fixed"))
        j = wait_for(lambda: (lambda o: o if cond(o, "Complete") or cond(o, "Failed") else None)(
            ok("GET", "/apis/batch/v1/namespaces/demo/jobs/fixed")))
        self.assertEqual(cond(j, "Complete")["status"], "True")
        self.assertIsNone(cond(j, "Failed"))

    def test_job_logs_rules(self):
        jobs = "/apis/batch/v1/namespaces/demo/jobs"
        control("POST", "job-logs", {"namespace": "demo", "prefix": "migrate-", "logs": "old"})
        control("POST", "job-logs", {"namespace": "demo", "prefix": "migrate-", "logs": "Applying 0001\nApplying 0002"})
        control("POST", "job-logs", {"namespace": "other", "name": "annotated", "logs": "not this namespace"})
        bad = call("POST", "/_fake/job-logs", {"namespace": "demo"}, token=None)
        self.assertEqual((bad.status, bad.json), (400, {"error": 'job-logs needs "logs": the lines, newline-separated'}))
        for name, logs in (("migrate-1", None), ("annotated", "from the template"), ("plain", None)):
            ok("POST", jobs, self.job(name, logs))
        done = lambda n: (lambda o: o if cond(o, "Complete") else None)(ok("GET", jobs + "/" + n))
        for name in ("migrate-1", "annotated", "plain"):
            wait_for(lambda: done(name))

        def log_of(job):
            pod = ok("GET", NS + "/demo/pods?labelSelector=job-name%3D" + job)["items"][0]
            return call("GET", NS + "/demo/pods/" + pod["metadata"]["name"] + "/log").text
        self.assertEqual(log_of("migrate-1"), "Applying 0001\nApplying 0002\n")
        self.assertEqual(log_of("annotated"), "from the template\n")
        self.assertEqual(log_of("plain"), "")
        control("DELETE", "job-logs")
        ok("POST", jobs, self.job("migrate-2"))
        wait_for(lambda: done("migrate-2"))
        self.assertEqual(log_of("migrate-2"), "")

    def test_bare_pod_becomes_ready(self):
        ok("POST", NS + "/demo/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        p = wait_for(lambda: (lambda o: o if o["status"]["phase"] == "Running" else None)(ok("GET", NS + "/demo/pods/p")))
        self.assertEqual({c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"], "True")
        self.assertRegex(p["status"]["podIP"], r"^10\.244\.")
        self.assertTrue(p["status"]["containerStatuses"][0]["ready"])
        settle()
        self.assertEqual(ok("GET", NS + "/demo/pods/p")["status"]["phase"], "Running")  # restartPolicy Always

    def test_controllers_can_be_switched_off(self):
        control("POST", "config", {"controllers": False})
        ok("POST", self.DEPS, deployment())
        settle()
        self.assertNotIn("status", ok("GET", self.DEPS + "/web"))

    def test_scale_subresource(self):
        control("POST", "config", {"controllers": False})
        ok("POST", self.DEPS, deployment(replicas=2))
        s = ok("GET", self.DEPS + "/web/scale")
        self.assertEqual((s["kind"], s["apiVersion"], s["spec"]["replicas"], s["status"]["selector"]),
                         ("Scale", "autoscaling/v1", 2, "app=web"))
        s = ok("PATCH", self.DEPS + "/web/scale", {"spec": {"replicas": 4}}, ctype="application/merge-patch+json")
        self.assertEqual(s["spec"]["replicas"], 4)
        d = ok("GET", self.DEPS + "/web")
        self.assertEqual((d["spec"]["replicas"], d["metadata"]["generation"]), (4, 2))


class TestLogs(Base):
    def pod(self, name="p", lines="alpha\nbeta\ngamma", restart="Never", containers=None):
        return ok("POST", NS + "/demo/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"fake.runbook.dev/logs": lines}},
            "spec": {"restartPolicy": restart,
                     "containers": containers or [{"name": "main", "image": "busybox"}]}})

    def test_logs_after_completion_and_options(self):
        self.pod()
        wait_for(lambda: ok("GET", NS + "/demo/pods/p")["status"]["phase"] == "Succeeded")
        r = call("GET", NS + "/demo/pods/p/log?container=main")
        self.assertEqual((r.status, r.headers["Content-Type"], r.text), (200, "text/plain", "alpha\nbeta\ngamma\n"))
        self.assertEqual(call("GET", NS + "/demo/pods/p/log?tailLines=1").text, "gamma\n")
        self.assertEqual(call("GET", NS + "/demo/pods/p/log?limitBytes=8").text, "alpha\nbe")
        lines = call("GET", NS + "/demo/pods/p/log?timestamps=true").text.splitlines()
        self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z alpha$")

    def test_follow_streams_until_the_container_ends(self):
        self.pod(lines="\n".join("line %d" % i for i in range(8)))
        wait_for(lambda: ok("GET", NS + "/demo/pods/p")["status"]["phase"] != "Pending")
        t0 = time.time()
        conn = connect()
        conn.request("GET", NS + "/demo/pods/p/log?follow=true&container=main",
                     headers={"Authorization": "Bearer " + TOKEN})
        r = conn.getresponse()
        self.assertEqual(r.headers["Transfer-Encoding"], "chunked")
        body = r.read().decode()
        conn.close()
        self.assertEqual(body, "".join("line %d\n" % i for i in range(8)))
        self.assertLess(time.time() - t0, 5)
        self.assertIn(ok("GET", NS + "/demo/pods/p")["status"]["phase"], ("Running", "Succeeded"))

    def test_log_errors(self):
        control("POST", "config", {"controllers": False})
        self.pod("two", containers=[{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])
        self.assertStatus(call("GET", NS + "/demo/pods/two/log"), 400, "BadRequest",
                          "a container name must be specified for pod two, choose one of: [a b]")
        self.assertStatus(call("GET", NS + "/demo/pods/two/log?container=zz"), 400, "BadRequest",
                          "container zz is not valid for pod two")
        self.assertStatus(call("GET", NS + "/demo/pods/two/log?container=a"), 400, "BadRequest",
                          'container "a" in pod "two" is waiting to start: ContainerCreating')
        self.assertStatus(call("GET", NS + "/demo/pods/ghost/log"), 404, "NotFound", 'pods "ghost" not found')

    def test_exit_code_annotation_fails_pod(self):
        ok("POST", NS + "/demo/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "f", "annotations": {"fake.runbook.dev/exit-code": "3"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}})
        p = wait_for(lambda: (lambda o: o if o["status"]["phase"] == "Failed" else None)(ok("GET", NS + "/demo/pods/f")))
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual((term["exitCode"], term["reason"]), (3, "Error"))


class TestFaults(Base):
    def test_fail_count_then_recover(self):
        control("POST", "faults", {"fail": {"count": 2, "code": 503}, "method": "GET", "path": "/secrets"})
        codes = [call("GET", NS + "/demo/secrets").status for _ in range(3)]
        self.assertEqual(codes, [503, 503, 200])
        self.assertEqual(call("POST", NS + "/demo/secrets", secret("s")).status, 201)
        log = [e for e in control("GET", "requests")["items"] if e["path"] == NS + "/demo/secrets"]
        self.assertEqual([(e["method"], e["status"], e["fault"]) for e in log][-4:],
                         [("GET", 503, "fail"), ("GET", 503, "fail"), ("GET", 200, None), ("POST", 201, None)])

    def test_fail_500_status_body(self):
        control("POST", "faults", {"fail": {"code": 500}})
        r = call("GET", NS + "/demo/secrets")
        self.assertStatus(r, 500, "InternalError", "Internal error occurred: injected fault")

    def test_throttle(self):
        control("POST", "faults", {"throttle": {"count": 1, "retry_after": 2}})
        r = call("GET", NS)
        body = self.assertStatus(r, 429, "TooManyRequests", "Too many requests, please try again later.")
        self.assertEqual(r.headers["Retry-After"], "2")
        self.assertEqual(body["details"], {"retryAfterSeconds": 2})
        self.assertEqual(call("GET", NS).status, 200)

    def test_drop_closes_connection(self):
        control("POST", "faults", {"drop": {}, "count": 1})
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            call("GET", NS)
        self.assertEqual(call("GET", NS).status, 200)

    def test_slow_and_skip(self):
        control("DELETE", "requests")
        control("POST", "faults", {"slow": {"ms": 400}, "skip": 1, "count": 1})
        call("GET", NS)
        t1 = time.time()
        call("GET", NS)
        t2 = time.time()
        call("GET", NS)
        self.assertGreaterEqual(t2 - t1, 0.4)
        # which request was slowed, from the log rather than a stopwatch a busy machine can fool
        self.assertEqual([e["fault"] for e in control("GET", "requests")["items"]], [None, "slow", None])

    def test_status_control_sets_and_freezes(self):
        ok("POST", "/apis/apps/v1/namespaces/demo/deployments", deployment())
        r = control("POST", "status", {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "demo",
                                       "name": "web", "status": {"observedGeneration": 1, "replicas": 2,
                                                                 "updatedReplicas": 1}})
        self.assertEqual(r["object"]["status"]["updatedReplicas"], 1)
        settle()
        self.assertEqual(ok("GET", DEP)["status"], {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1})

    def test_seed_objects_keep_status(self):
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "old", "namespace": "demo"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
               "status": {"phase": "Lost"}}
        out = control("POST", "objects", {"objects": [pvc], "reconcile": False})["objects"][0]
        self.assertTrue(out["metadata"]["resourceVersion"].isdigit())
        settle()
        self.assertEqual(ok("GET", NS + "/demo/persistentvolumeclaims/old")["status"], {"phase": "Lost"})

    def test_reset_clears_everything(self):
        ok("POST", NS + "/demo/secrets", secret("s"))
        control("POST", "faults", {"fail": {}, "count": -1, "path": "^/nothing"})
        control("POST", "reset")
        self.assertEqual(control("GET", "faults")["rules"], [])
        self.assertEqual(sorted(n["metadata"]["name"] for n in ok("GET", NS)["items"]),
                         ["default", "kube-node-lease", "kube-public", "kube-system"])


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "backups.runbook.dev"},
    "spec": {"group": "runbook.dev", "scope": "Namespaced",
             "names": {"plural": "backups", "singular": "backup", "kind": "Backup", "shortNames": ["bk"]},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}},
                           "subresources": {"status": {}}}]}}
BK = "/apis/runbook.dev/v1/namespaces/demo/backups"


class TestCustomResources(Base):
    def setUp(self):
        super().setUp()
        crd = ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        self.assertEqual(cond(crd, "Established")["status"], "True")

    def bk(self, name="b1", **spec):
        return {"apiVersion": "runbook.dev/v1", "kind": "Backup", "metadata": {"name": name},
                "spec": dict({"target": "pg", "keep": 3, "tags": ["a"]}, **spec)}

    def test_discovery_and_crud(self):
        groups = [g["name"] for g in ok("GET", "/apis")["groups"]]
        self.assertIn("runbook.dev", groups)
        res = {r["name"]: r for r in ok("GET", "/apis/runbook.dev/v1")["resources"]}
        self.assertEqual((res["backups"]["kind"], res["backups"]["shortNames"]), ("Backup", ["bk"]))
        self.assertIn("backups/status", res)
        self.assertIn("apis/runbook.dev/v1", ok("GET", "/openapi/v3")["paths"])
        b = ok("POST", BK, self.bk())
        self.assertEqual(b["metadata"]["generation"], 1)
        self.assertEqual(ok("GET", BK)["kind"], "BackupList")
        b["spec"]["keep"] = 5
        del b["metadata"]["resourceVersion"]
        body = self.assertStatus(call("PUT", BK + "/b1", b), 422, "Invalid")
        self.assertEqual(body["message"], 'Backup.runbook.dev "b1" is invalid: metadata.resourceVersion: Invalid '
                                          'value: 0: must be specified for an update')
        self.assertStatus(call("GET", BK + "/nope"), 404, "NotFound", 'backups.runbook.dev "nope" not found')

    def test_patches_and_apply(self):
        ok("POST", BK, self.bk())
        r = ok("PATCH", BK + "/b1", {"spec": {"keep": 7}}, ctype="application/merge-patch+json")
        self.assertEqual((r["spec"]["keep"], r["metadata"]["generation"]), (7, 2))
        r = ok("PATCH", BK + "/b1", [{"op": "add", "path": "/spec/tags/-", "value": "b"}],
               ctype="application/json-patch+json")
        self.assertEqual(r["spec"]["tags"], ["a", "b"])
        r = call("PATCH", BK + "/b1", {"spec": {"keep": 1}}, ctype="application/strategic-merge-patch+json")
        self.assertStatus(r, 415, "UnsupportedMediaType",
                          "the body of the request was in an unknown format - accepted media types include: "
                          "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        r = call("PATCH", BK + "/b2?fieldManager=runbook", self.bk("b2"), ctype=APPLY)
        self.assertEqual(r.status, 201)
        r = call("PATCH", BK + "/b2?fieldManager=runbook", self.bk("b2"), ctype=APPLY)
        self.assertEqual((r.status, r.json["metadata"]["generation"]), (200, 1))
        r = ok("PATCH", BK + "/b1/status", {"status": {"phase": "Done"}}, ctype="application/merge-patch+json")
        self.assertEqual((r["status"], r["metadata"]["generation"]), ({"phase": "Done"}, 3))

    def test_deleting_the_crd_removes_the_resources(self):
        ok("POST", BK, self.bk())
        ok("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/backups.runbook.dev")
        self.assertEqual(call("GET", BK).status, 404)
        self.assertNotIn("runbook.dev", [g["name"] for g in ok("GET", "/apis")["groups"]])


class TestStreams(Base):
    """pods/exec and pods/portforward: Status errors before the upgrade, and
    one exec over a hand-written WebSocket client."""

    def setUp(self):
        super().setUp()
        running = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run", "namespace": "demo"},
                   "spec": {"containers": [{"name": "main", "image": "busybox"}]}, "status": {"phase": "Running"}}
        control("POST", "objects", {"objects": [running], "reconcile": False})

    def test_errors_before_the_upgrade(self):
        self.assertStatus(call("GET", NS + "/demo/pods/ghost/exec?command=true"), 404, "NotFound",
                          'pods "ghost" not found')
        self.assertStatus(call("GET", NS + "/demo/pods/run/exec?command=true&container=x"), 400, "BadRequest",
                          "container x is not valid for pod run")
        self.assertStatus(call("POST", NS + "/demo/pods/run/exec?command=true"), 400, "BadRequest",
                          "Upgrade request required")
        self.assertStatus(call("GET", NS + "/demo/pods/run/portforward?ports=80"), 400, "BadRequest",
                          "Upgrade request required")
        self.assertStatus(call("GET", NS + "/demo/pods/run/portforward?ports=x"), 400, "BadRequest",
                          'invalid port "x"')

    def test_exec_over_websocket(self):
        import socket
        import struct
        raw = socket.create_connection(("127.0.0.1", SERVER["port"]), timeout=10)
        s = SERVER["ctx"].wrap_socket(raw, server_hostname="127.0.0.1")
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET %s/demo/pods/run/exec?command=sh&command=-c&command=echo+hi%%3B+exit+5&stdout=true HTTP/1.1\r\n"
                   "Host: x\r\nAuthorization: Bearer %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n" % (NS, TOKEN, key)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, data = data.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        self.assertIn(b"Sec-WebSocket-Protocol: v4.channel.k8s.io", head)
        frames = []
        while True:
            while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F if data[1] & 0x7F < 126 else 0):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            n, off = data[1] & 0x7F, 2
            if n == 126:
                n, off = struct.unpack(">H", data[2:4])[0], 4
            while len(data) < off + n:
                data += s.recv(4096)
            op, payload, data = data[0] & 0x0F, data[off:off + n], data[off + n:]
            if op == 8:
                break
            frames.append(payload)
        s.close()
        self.assertIn(b"\x01hi\n", frames)
        status = json.loads([f for f in frames if f[:1] == b"\x03"][0][1:])
        self.assertEqual((status["status"], status["reason"], status["details"]["causes"][0]),
                         ("Failure", "NonZeroExitCode", {"reason": "ExitCode", "message": "5"}))


    def spdy_session(self):
        """A plain SPDY/3.1 upgrade of pods/run/portforward: (socket, framer, bytes after the 101)."""
        import socket
        raw = socket.create_connection(("127.0.0.1", SERVER["port"]), timeout=10)
        s = SERVER["ctx"].wrap_socket(raw, server_hostname="127.0.0.1")
        s.sendall(("POST %s/demo/pods/run/portforward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
                   "Content-Length: 0\r\n\r\n" % (NS, TOKEN)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, rest = data.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        self.assertIn(b"X-Stream-Protocol-Version: portforward.k8s.io", head)
        return s, fake_spdy.Framer(), rest

    def spdy_until(self, s, framer, rest, pred):
        """Frames from the fake until pred(frames) holds (or the connection ends)."""
        frames = framer.feed(rest)
        while not pred(frames):
            chunk = s.recv(65536)
            if not chunk:
                break
            frames += framer.feed(chunk)
        return frames

    def test_spdy_negotiation_refused(self):
        r = call("POST", NS + "/demo/pods/run/portforward",
                 headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v9.example"})
        self.assertStatus(r, 403, "Forbidden", "unable to upgrade: unable to negotiate protocol: client supports "
                          "['v9.example'], server supports [portforward.k8s.io]")

    def test_spdy_session_without_kubectl(self):
        """What kubectl never sends: an unknown stream type, streams without requestid,
        a port that is no number, a port with nothing registered; PING and GOAWAY."""
        import struct
        F = fake_spdy
        s, framer, rest = self.spdy_session()

        def syn(sid, headers):
            return F.Framer.control(F.SYN_STREAM, 0, struct.pack(">IIH", sid, 0, 0) + framer.header_block(headers))

        s.sendall(syn(1, {"streamtype": "bogus", "port": "80"}) + F.Framer.control(F.PING, 0, struct.pack(">I", 7)))
        # no requestid: error stream 3 and data stream 5 pair by id; then requestid "r" with port "abc"
        s.sendall(syn(3, {"streamtype": "error", "port": "81"}) + syn(5, {"streamtype": "data", "port": "81"}) +
                  syn(7, {"streamtype": "error", "port": "abc", "requestid": "r"}) +
                  syn(9, {"streamtype": "data", "port": "abc", "requestid": "r"}))
        fins = lambda frames: {f[1] for f in frames if f[0] == "data" and f[2] & F.FLAG_FIN}
        frames = self.spdy_until(s, framer, rest, lambda fr: fins(fr) >= {3, 5, 7, 9})
        ctrl = [(f[1], f[3]) for f in frames if f[0] == "control"]
        replies = [struct.unpack(">I", p[:4])[0] for t, p in ctrl if t == F.SYN_REPLY]
        self.assertEqual(replies, [1, 3, 5, 7, 9])
        self.assertIn((F.RST_STREAM, struct.pack(">II", 1, F.RST_PROTOCOL_ERROR)), ctrl)
        self.assertIn((F.PING, struct.pack(">I", 7)), ctrl)
        text = {sid: b"".join(f[3] for f in frames if f[0] == "data" and f[1] == sid) for sid in (3, 5, 7, 9)}
        self.assertEqual(text, {3: b"error forwarding port 81 to pod run: no local port registered for it",
                                5: b"", 7: b'invalid port "abc"', 9: b""})
        s.sendall(F.Framer.control(F.GOAWAY, 0, struct.pack(">II", 0, 0)))
        self.assertEqual(s.recv(1), b"")  # the fake ends the session
        s.close()
        sessions = [e for e in control("GET", "execs")["items"] if e.get("protocol") == "SPDY/3.1 portforward.k8s.io"]
        self.assertEqual(sessions, [{"namespace": "demo", "pod": "run", "portforward": [81], "connections": 2,
                                     "protocol": "SPDY/3.1 portforward.k8s.io", "closed": "goaway"}])

if __name__ == "__main__":
    unittest.main()
