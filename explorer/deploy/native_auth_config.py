"""A real class's login: students sign up with their own password, and nobody gets in until the teacher approves them.

This is a teacher's config file (see ``jupyterhub_config.py`` beside it): it loads the project's deploy config, then
configures JupyterHub's NativeAuthenticator (``jupyterhub-nativeauthenticator``, in the ``classroom`` extra). Run it
from the repository as::

    EXPLORER_HUB_AUTH=native EXPLORER_HUB_ADMINS=teacher \\
        .venv/bin/jupyterhub -f explorer/deploy/native_auth_config.py

``native`` is the package's ``jupyterhub.authenticators`` entry point (``nativeauthenticator.NativeAuthenticator``
works too); every other ``EXPLORER_HUB_*`` variable means what ``jupyterhub_config.py`` says. This file adds:

=========================== ===========================================================================================
``EXPLORER_HUB_ADMINS``      required: the teacher's (and assistants') user names, separated by spaces or commas. They
                             are the hub's admins (with any the deploy config names) and the only names approved
                             without an admin's click.
``EXPLORER_HUB_USERS``       must stay empty (the hub refuses to start otherwise): NativeAuthenticator approves every
                             name in ``allowed_users`` at sign-up, so a list there would let whoever signs up first
                             under a listed name in unapproved. The approval list is the gate.
=========================== ===========================================================================================

First start, in this order
--------------------------
1. The teacher opens ``/hub/signup`` and signs up under each admin name *before anyone else can reach the hub*: an
   admin name is approved at sign-up, so whoever signs up first under it is an admin. The page must say "The signup
   was successful!". If it says the name is already in use, someone else has it: stop the hub, delete
   ``jupyterhub.sqlite`` in the state directory (no student has an account yet) and start again.
2. Students open ``/hub/signup`` and choose a name and a password; the page says "Your information has been sent to
   the admin." Until then, logging in says "User <name> has not been authorized by an administrator yet."
3. The teacher logs in, opens ``/hub/authorize`` and clicks *Authorize* for each name they recognise (*Discard*
   deletes a sign-up). Students can then log in at ``/hub/login``. *Unauthorize* refuses a student's next login but
   ends no login already made (JupyterHub's login cookie lasts up to 14 days): to shut someone out at once, also
   delete them at ``/hub/admin``.
4. A forgotten password: the teacher sets a new one at ``/hub/change-password/<name>``; students change their own at
   ``/hub/change-password``.

What it protects
----------------
* **Admin approval.** ``NativeAuthenticator.authenticate`` returns a name only for an account the teacher has
  authorized (``open_signup = False``); anyone can sign up, nobody can log in or get a server unapproved.
* **Password rules at sign-up** (and at password changes): at least ``MINIMUM_PASSWORD_LENGTH`` (10) characters, and
  not in the package's list of 10,000 common passwords (``check_common_password``; only 146 of them have 10
  characters or more, so the length does most of the work).
* **Lock-out.** After ``ALLOWED_FAILED_LOGINS`` (5) failed logins under one name, that name cannot log in, even with
  the right password, until ``SECONDS_BEFORE_NEXT_TRY`` (300) seconds have passed since the last failure (the page
  shows the usual "Invalid username or password."). A successful login resets the count.
* **User names** are lower-cased (so "Ada" logs in as ``ada``) and must match ``^[a-z0-9][a-z0-9._-]{0,31}$``: up to
  32 lower-case letters, digits, ``.``, ``_``, ``-``, not starting with a punctuation mark; no spaces, slashes or
  ``..``, so a name is always a safe folder name. A pattern that ``jupyterhub_config.py`` sets is kept instead (a
  file loading this one can set its own after it).

What it does not protect
------------------------
* **No identity check, no e-mail verification**: anyone who can reach ``/hub/signup`` may ask for any free name. The
  teacher's approval is the only check, so approve only names you recognise (and *Discard* the rest).
* **Passwords** are stored bcrypt-hashed (salted) in the hub's database (table ``users_info`` of
  ``jupyterhub.sqlite`` in ``EXPLORER_HUB_STATE_DIR``): keep that folder private and backed up. bcrypt reads at most
  72 bytes (UTF-8); bcrypt 5 refuses a longer password outright, so signing up or logging in with one ends on a
  server error page (choose a shorter passphrase). No second factor is switched on.
* **Plain HTTP** sends passwords in clear text: beyond loopback serve HTTPS (``c.JupyterHub.ssl_cert``/``ssl_key`` in
  your own config file, or a TLS proxy in front). The sign-up page warns when it is served over HTTP.
* **The lock-out** is kept in the hub's memory (a restart clears it), counts per name, not per address, and lets
  anyone lock a student out for 5 minutes by typing wrong passwords under their name. Failed logins *before
  approval* count too, correct password or not.
* **Approving is a plain link**: ``/hub/authorize/<name>`` toggles an account and ``/hub/discard/<name>`` deletes a
  sign-up, on a simple visit by a logged-in admin. Approve from the ``/hub/authorize`` page only; never follow such
  a link someone sends you.
* The sign-up page tells whether a name is taken, so names are not secret.
* Everything ``jupyterhub_config.py`` says about students' processes still holds: the login decides *who* gets a
  server, not how isolated servers are from each other.

NativeAuthenticator on JupyterHub 6
-----------------------------------
* **Approval is the allow rule.** JupyterHub 5 and later refuse every login unless some allow rule admits it
  (``Authenticator.allow_all`` is False by default, and ``check_allowed`` then wants the name in ``allowed_users``).
  NativeAuthenticator has no allow rule of its own: its ``authenticate`` already returns nothing for an unapproved
  account. So this file sets ``c.Authenticator.allow_all = True``: everyone NativeAuthenticator lets through
  (approved, right password, not locked out) may log in, and nobody else.
* **Its login page needs a fix.** NativeAuthenticator 1.3 (the newest release) was written for JupyterHub 4-5: on
  JupyterHub 6 every login form sent gives "500 Internal Server Error". The class this file hands JupyterHub is the
  one ``EXPLORER_HUB_AUTH`` names with :class:`JupyterHub6LoginHandler` at /login (see there); everything else,
  settings included, is NativeAuthenticator's.

Other logins a school can plug in the same way
-----------------------------------------------
Your school's own accounts are often better than sign-ups: no passwords for the hub to keep, no approving. With
``ltiauthenticator``, LTI 1.3 from the school's learning platform (Moodle, Canvas, ...):
``EXPLORER_HUB_AUTH=ltiauthenticator.lti13.auth.LTI13Authenticator``; with ``oauthenticator``, OAuth/OpenID Connect
(``EXPLORER_HUB_AUTH=generic-oauth``, ``google``, ``azuread``, ``github``, ...). Either goes in a config file like this
one: ``load_subconfig`` of ``jupyterhub_config.py``, then that authenticator's settings and ``admin_users``.
To change a setting here (a longer lock-out, say), write your own file that loads this one and sets it after::

    load_subconfig("/path/to/repo/explorer/deploy/native_auth_config.py")
    c.NativeAuthenticator.seconds_before_next_try = 600
"""

from __future__ import annotations

import os
import re
from importlib.metadata import entry_points
from pathlib import Path

from jupyterhub.handlers.login import LoginHandler as JupyterHubLoginHandler
from traitlets.utils.importstring import import_item

try:
    from nativeauthenticator import NativeAuthenticator
    from nativeauthenticator.handlers import LoginHandler as NativeLoginHandler
except ImportError as error:  # the classroom extra is not installed
    raise ImportError(f"explorer/deploy/native_auth_config.py needs jupyterhub-nativeauthenticator ({error}): "
                      "pip install -c constraints.txt -e '.[classroom]'") from error

c = get_config()  # noqa: F821  (provided by traitlets when JupyterHub loads this file)

DEPLOY_CONFIG = Path(__file__).resolve().with_name("jupyterhub_config.py")
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"
MINIMUM_PASSWORD_LENGTH = 10
ALLOWED_FAILED_LOGINS = 5
SECONDS_BEFORE_NEXT_TRY = 300


def authenticator_class(value: str) -> type | None:
    """The class ``EXPLORER_HUB_AUTH`` names, looked up as JupyterHub does: an entry point of the
    ``jupyterhub.authenticators`` group, else an import path. None when it names nothing."""
    for entry in entry_points(group="jupyterhub.authenticators", name=value):
        return entry.load()
    try:
        return import_item(value)
    except (ImportError, AttributeError, ValueError):  # not an import path, or it does not import
        return None


# --- NativeAuthenticator 1.3 on JupyterHub 6 --------------------------------------------------------------------
class _NoStatsd:
    """A statsd client that records nothing: JupyterHub 6 removed its handlers' ``statsd`` (jupyterhub#5407), which
    NativeAuthenticator 1.3's login handler still times each login with."""

    def timer(self, name: str) -> _NoStatsd:
        return self

    def start(self) -> _NoStatsd:
        return self

    def stop(self, send: bool = True) -> None:
        return None


class JupyterHub6LoginHandler(NativeLoginHandler):
    """NativeAuthenticator's /hub/login, working on JupyterHub 6. Unchanged, every login (right password or wrong) is
    a 500 "Internal Server Error" page: its ``post`` reads ``self.statsd`` (gone in JupyterHub 6), and JupyterHub's
    error page for a login form then calls ``_render(..., sync=True)``, which NativeAuthenticator's ``_render`` does
    not accept. Here ``statsd`` records nothing, and that error page (a stale form, an error while logging in) is
    JupyterHub's own login page with the message: NativeAuthenticator's template is registered only for asynchronous
    rendering, and an error page must be rendered synchronously."""

    statsd = _NoStatsd()

    def _render(self, login_error=None, username=None, sync=False, **kwargs):
        if sync:
            return JupyterHubLoginHandler._render(self, login_error=login_error, username=username, sync=True,
                                                  **kwargs)
        return super()._render(login_error=login_error, username=username)


def for_jupyterhub6(base: type) -> type:
    """``base`` (NativeAuthenticator or a subclass of it) serving :class:`JupyterHub6LoginHandler` at /login; the
    same configuration section (``c.NativeAuthenticator``) applies."""

    def get_handlers(self, app):
        return [(route, JupyterHub6LoginHandler if handler is NativeLoginHandler else handler)
                for route, handler in base.get_handlers(self, app)]

    return type(base.__name__, (base,), {"get_handlers": get_handlers, "__module__": "native_auth_config",
                                         "__doc__": f"{base.__doc__ or base.__name__} (JupyterHub 6's /login)"})


def names(variable: str) -> list[str]:
    """User names separated by spaces or commas, lower-cased as NativeAuthenticator normalises them."""
    return [name.lower() for name in re.split(r"[\s,]+", os.environ.get(variable, "")) if name]


# --- checks that need no deploy config: refuse early, with the variable's name ------------------------------------
AUTH = os.environ.get("EXPLORER_HUB_AUTH", "").strip()
chosen = authenticator_class(AUTH) if AUTH else None
if not (isinstance(chosen, type) and issubclass(chosen, NativeAuthenticator)):
    raise ValueError(f"explorer/deploy/native_auth_config.py configures NativeAuthenticator: set "
                     f"EXPLORER_HUB_AUTH=native (found EXPLORER_HUB_AUTH={AUTH!r})")
ADMINS = names("EXPLORER_HUB_ADMINS")
if not ADMINS:
    raise ValueError("EXPLORER_HUB_ADMINS is not set: name the teacher's user name(s), separated by spaces or commas "
                     "(e.g. EXPLORER_HUB_ADMINS=teacher). Admins approve students' sign-ups at /hub/authorize; sign "
                     "up under that name first, before students can reach the hub")
if names("EXPLORER_HUB_USERS"):
    raise ValueError("EXPLORER_HUB_USERS must be empty with explorer/deploy/native_auth_config.py: NativeAuthenticator "
                     "approves every listed name at sign-up, so whoever signs up first under one would get in without "
                     "the teacher's approval. Leave it unset and approve students at /hub/authorize")

if not DEPLOY_CONFIG.is_file():  # load_subconfig would skip a missing file without a word
    raise FileNotFoundError(f"the deploy config {DEPLOY_CONFIG} is missing")
load_subconfig(str(DEPLOY_CONFIG))  # noqa: F821  (provided by traitlets, like get_config)

# --- NativeAuthenticator ----------------------------------------------------------------------------------------
# A pattern the deploy config set wins (a file loading this one may set its own after); only an unset one gets ours.
pattern = c.Authenticator.get("username_pattern") or c.NativeAuthenticator.get("username_pattern")
if not pattern:
    pattern = c.Authenticator.username_pattern = USERNAME_PATTERN
bad = [name for name in ADMINS if not re.match(pattern, name)]
if bad:
    raise ValueError(f"EXPLORER_HUB_ADMINS: {bad} do not match the user name pattern {pattern!r}")

c.JupyterHub.authenticator_class = for_jupyterhub6(chosen)
# added to any admins the deploy config names: every one of them is approved at sign-up (see the docstring)
c.Authenticator.admin_users = set(c.Authenticator.get("admin_users", set())) | set(ADMINS)
# JupyterHub >= 5 wants an allow rule; NativeAuthenticator's approval is it (see "NativeAuthenticator on JupyterHub 6").
c.Authenticator.allow_all = True
c.NativeAuthenticator.enable_signup = True
c.NativeAuthenticator.open_signup = False  # a sign-up waits for an admin's approval
c.NativeAuthenticator.ask_email_on_signup = False  # nothing is sent to it, so it is not asked for
c.NativeAuthenticator.minimum_password_length = MINIMUM_PASSWORD_LENGTH
c.NativeAuthenticator.check_common_password = True
c.NativeAuthenticator.allowed_failed_logins = ALLOWED_FAILED_LOGINS
c.NativeAuthenticator.seconds_before_next_try = SECONDS_BEFORE_NEXT_TRY
