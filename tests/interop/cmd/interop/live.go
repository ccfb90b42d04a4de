package main

func liveTests(s *Suite, name, path string, scenarios []*Scenario) {}
