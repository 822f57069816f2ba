"""Device profiles: what a target device can run and how to observe it (`edgerobust devices`)."""
from .catalog import list_profiles, load_profile, profile_names, read_profile_file, resolve_target, user_directories
from .operators import OPERATOR_SETS
from .profile import KNOWN_PRECISIONS, DeviceProfile, ProfileError, profile_from_dict
from .runtimes import PROFILE_RUNTIMES, RUNTIME_SPECS, RuntimeSpec, runtimes_taking

__all__ = ["KNOWN_PRECISIONS", "OPERATOR_SETS", "PROFILE_RUNTIMES", "RUNTIME_SPECS", "DeviceProfile", "ProfileError",
           "RuntimeSpec", "list_profiles", "load_profile", "profile_from_dict", "profile_names", "read_profile_file",
           "resolve_target", "runtimes_taking", "user_directories"]
