"""rasa-sdk custom actions: thin; every piece of work goes through the work-order API client."""
