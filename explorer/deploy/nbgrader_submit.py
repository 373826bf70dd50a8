"""nbgrader's hand-in, made private: after ``nbgrader submit`` (JupyterLab's Assignments list) copies a hand-in into
the exchange's inbound, the folder is made ``rwxr-x---``: its owner and the teachers' group only (the inbound's
set-group-id bit gives the folder, and everything copied into it, that group). nbgrader leaves it mode 0777 so that an instructor can delete it later; on the
hub that would let any student who learns the folder's name read, replace or delete another's files.

Students' servers use it through ``nbgrader_config.json`` (``ExchangeFactory.submit``), written by the hub.
"""

from __future__ import annotations

import os

from nbgrader.exchange.default.submit import ExchangeSubmit

__all__ = ["PrivateSubmit", "HANDIN_MODE"]

HANDIN_MODE = 0o750  # a set-group-id bit would be dropped: the student is not in the teachers' group


class PrivateSubmit(ExchangeSubmit):
    def copy_files(self) -> None:
        super().copy_files()
        os.chmod(os.path.join(self.inbound_path, self.assignment_filename), HANDIN_MODE)
