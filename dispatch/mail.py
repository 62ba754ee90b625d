"""Email backends of the module."""

import datetime as dt
import itertools
import os
import uuid

from django.core.mail.backends.filebased import EmailBackend as FileBackend

# Orders files written in the same microsecond by this process; the uuid part keeps names
# unique across processes (several Celery workers may share the folder).
_counter = itertools.count(1)


class EmlFileBackend(FileBackend):
    """Writes each message as its own standard .eml file in EMAIL_FILE_PATH.

    Django's file backend appends every message of a connection to one .log file with
    separator lines, which no mail client opens; here each file is an RFC 5322 message
    (attachments included) that opens with a double click. Names sort by time of writing:
    `20261203-020000-123456-000001-<uuid>.eml`.
    """

    def open(self):
        # No shared stream: each message gets its own file in write_message().
        return False

    def close(self):
        pass

    def send_messages(self, email_messages):
        if not email_messages:
            return 0
        sent = 0
        with self._lock:
            for message in email_messages:
                try:
                    self.write_message(message)
                except Exception:
                    if not self.fail_silently:
                        raise
                else:
                    sent += 1
        return sent

    def write_message(self, message):
        data = message.message().as_bytes()
        name = self._new_filename()
        path = os.path.join(self.file_path, name)
        # Written under a hidden temporary name then renamed, so that anything watching the
        # folder never picks up a half-written message.
        temporary = os.path.join(self.file_path, f".{name}.tmp")
        with open(temporary, "xb") as stream:
            stream.write(data)
        os.replace(temporary, path)
        return path

    def _new_filename(self) -> str:
        now = dt.datetime.now(dt.UTC)
        return f"{now:%Y%m%d-%H%M%S-%f}-{next(_counter):06d}-{uuid.uuid4().hex[:12]}.eml"
