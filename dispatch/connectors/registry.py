from importlib import import_module

from dispatch.models import Integration, Provider

from .base import ConfigurationError, Connector

# provider -> "module:Class", imported on first use.
CONNECTORS = {
    Provider.BAVEL: "dispatch.connectors.bavel:BavelConnector",
    Provider.AFNOR: "dispatch.connectors.afnor:AfnorConnector",
    Provider.SANDBOX: "dispatch.connectors.sandbox:SandboxConnector",
}


def connector_for(integration: Integration) -> Connector:
    path = CONNECTORS.get(integration.provider)
    if path is None:
        raise ConfigurationError(f"No connector for provider {integration.provider!r}.")
    module_name, class_name = path.split(":")
    return getattr(import_module(module_name), class_name)(integration)
