"""ShopTwin's protobuf contracts; generated Python code lives in :mod:`shoptwin.v1`."""
