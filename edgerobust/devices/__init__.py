"""Device profiles: what a target device can run and how to observe it (`edgerobust devices`)."""
from .catalog import list_profiles, load_profile, profile_names, read_profile_file, resolve_target, user_directories
from .operators import OPERATOR_SETS
from .profile import DeviceProfile, ProfileError, profile_from_dict
from .runtimes import RUNTIME_SPECS, RuntimeSpec, profile_runtimes, runtimes_taking

__all__ = ["OPERATOR_SETS", "RUNTIME_SPECS", "DeviceProfile", "ProfileError", "RuntimeSpec", "list_profiles",
           "load_profile", "profile_from_dict", "profile_names", "profile_runtimes", "read_profile_file",
           "resolve_target", "runtimes_taking", "user_directories"]
