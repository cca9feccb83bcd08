"""waddlebot-echo: answers with the event it was given."""


def lambda_handler(event, context):
    """Return the event unchanged."""
    return event
