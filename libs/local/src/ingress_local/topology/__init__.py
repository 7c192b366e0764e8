"""The local topology: namespaces for an L4 node, a ToR and a client around this machine."""

from .addresses import AddressPlan, choose_plan
from .system import SERVICES, LocalSystem, Options, ServiceEntry

__all__ = ["SERVICES", "AddressPlan", "LocalSystem", "Options", "ServiceEntry", "choose_plan"]
