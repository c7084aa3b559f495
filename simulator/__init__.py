"""SimPy digital twin of shoppers, vehicles and a 5G network."""
