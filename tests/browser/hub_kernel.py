"""Run code in a student's own kernel on the hub, as JupyterLab does: start a kernel through the student's server's
REST API (through the proxy, with the student's token) and execute over the kernel's websocket. The code runs in the
kernel process, as the student's Unix user; what it prints comes back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def user_api(hub_url: str, user: str, token: str, path: str, method: str = "GET", body: dict | None = None,
             timeout: float = 180) -> tuple[int, object]:
    """Call ``/user/<user>/<path>`` through the proxy with the user's token: (status, parsed JSON or error text)."""
    request = urllib.request.Request(f"{hub_url}user/{user}/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@dataclass
class HubKernel:
    hub_url: str      # http://127.0.0.1:PORT/
    user: str
    token: str
    kernel_id: str = ""

    def _api(self, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, object]:
        return user_api(self.hub_url, self.user, self.token, f"api/{path}", method, body, timeout=60)

    def start(self) -> HubKernel:
        status, model = self._api("kernels", "POST", {"name": "python3"})
        assert status == 201, (status, model)
        self.kernel_id = model["id"]
        return self

    def shutdown(self) -> None:
        if self.kernel_id:
            self._api(f"kernels/{self.kernel_id}", "DELETE")
            self.kernel_id = ""

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute ``code``; stdout and stderr as text, a traceback's last line appended as ``!! <error>``. Runs in a
        thread of its own: Playwright's sync API keeps an event loop running in the test's thread."""
        async def timed() -> str:
            return await asyncio.wait_for(self._run(code), timeout)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(timed())).result()

    async def _run(self, code: str) -> str:
        ws_url = self.hub_url.replace("http", "ws", 1) + f"user/{self.user}/api/kernels/{self.kernel_id}/channels"
        connection = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {self.token}"}))
        msg_id = uuid.uuid4().hex
        connection.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user,
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        out: list[str] = []
        try:
            while True:
                raw = await connection.read_message()
                if raw is None:
                    out.append("!! websocket closed (kernel died?)")
                    break
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["header"]["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    out.append(f"!! {content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    break
        finally:
            connection.close()
        return "".join(out)
