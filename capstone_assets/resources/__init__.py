from capstone_assets.resources.lake import LakeResource
from capstone_assets.resources.quality import QualityResource
from capstone_assets.resources.spark import spark_resource
from capstone_assets.resources.tracker import TrackerResource

__all__ = ["LakeResource", "QualityResource", "spark_resource", "TrackerResource"]
