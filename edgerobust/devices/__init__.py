"""Device profiles: what a target device can run and how to observe it (`edgerobust devices`)."""
from .catalog import list_profiles, load_profile, profile_names, read_profile_file, resolve_target, user_directories
from .profile import KNOWN_PRECISIONS, KNOWN_RUNTIMES, DeviceProfile, ProfileError, profile_from_dict

__all__ = ["KNOWN_PRECISIONS", "KNOWN_RUNTIMES", "DeviceProfile", "ProfileError", "list_profiles", "load_profile",
           "profile_from_dict", "profile_names", "read_profile_file", "resolve_target", "user_directories"]
