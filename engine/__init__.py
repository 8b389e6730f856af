"""The model (engine.model: pure torch modules and the DeftRec facade) and the services that read runs and answer
questions about them (engine.services); headless, and the model imports nothing of the services."""
