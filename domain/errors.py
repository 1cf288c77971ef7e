"""Domain errors: raised by commands before any event is recorded."""


class DomainError(Exception):
    """A command was refused; nothing was recorded."""


class NotFound(DomainError):
    """The thing does not exist, or belongs to someone else (never say which)."""


class UsernameTaken(DomainError):
    pass


class InvalidCredentials(DomainError):
    pass


class NothingToRegenerate(DomainError):
    pass


class ReplyNotOpen(DomainError):
    """The reply already ended (completed, failed, cancelled or interrupted)."""


class AlreadyClaimed(DomainError):
    """Another web worker (or this one, earlier) already took this reply to generate."""


class LastAdmin(DomainError):
    """The change would leave no active administrator."""
