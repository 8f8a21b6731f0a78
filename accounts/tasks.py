"""Emails are sent through the outbox (`outbox.services`, ADR 0076): no task argument
carries an email's content, so a sign-in link never sits in the broker."""
