"""Wire contracts as typed classes: the input event, the DLQ record, the user update and the
recommendation message. One module each; nothing here talks to Kafka or Redis."""
